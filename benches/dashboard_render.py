"""Times the dashboard's pages in headless chromium (Playwright): from the navigation's start
until the page's data is on screen, `rounds` times each in a fresh tab; prints the median
per page as a BENCH line. Used by benches/dashboard.rs (`make bench-dashboard`).

usage: dashboard_render.py <master url> <tasks> <rounds>
"""
import statistics
import sys

from playwright.sync_api import sync_playwright

URL, TASKS, ROUNDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Each page, and what is on screen once its data is drawn.
PAGES = [
    ("overview", "/", "text=All %d tasks" % TASKS),
    ("tasks", "/tasks", "text=%d of %d task(s)" % (TASKS, TASKS)),
    ("services", "/services", "text=\"/bench/app-9\""),
    ("nodes", "/nodes", "text=\"emulated-9\""),
]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    # The bench's master has no tokens: any token is accepted, and the page needs one.
    context.add_init_script("sessionStorage.setItem('dcos-rs-token', 'bench')")
    for name, route, done in PAGES:
        times = []
        for _ in range(ROUNDS):
            page = context.new_page()
            page.goto(URL + "/#" + route, wait_until="commit")
            page.wait_for_selector(done, timeout=60_000)
            times.append(page.evaluate("performance.now()"))
            page.close()
        print(f"BENCH dashboard_{name}_{TASKS}_tasks {statistics.median(times):.0f} ms")
        print(f"  {name}: " + ", ".join(f"{t:.0f}" for t in times) + " ms", file=sys.stderr)
    browser.close()
