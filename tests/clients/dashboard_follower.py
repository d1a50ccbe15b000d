"""The dashboard served by a follower master of a TLS cluster (e2e/main.rs), in Debian's
headless chromium (Playwright): a deploy from its editor is passed on to the leader, the
app is seen running without a reload, and its task's log comes through that follower from
the task's agent (mutual TLS with the master's certificate). The console stays free of
errors.

usage: dashboard_follower.py <follower https URL> <token>
"""
import json
import sys

from playwright.sync_api import sync_playwright, expect

from checks import check

URL, TOKEN = sys.argv[1], sys.argv[2]
APP = "/ha/dash"
LINE = "served through a follower"


def main():
    expect.set_options(timeout=30_000)
    errors, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        # The cluster's own CA signed the master's certificate; the browser does not know it.
        context = browser.new_context(ignore_https_errors=True)
        context.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append("uncaught: " + str(e)))
        page.goto(URL + "/?token=" + TOKEN + "#/nodes")
        expect(page.get_by_role("heading", name="Masters")).to_be_visible()
        expect(page.locator("main")).to_contain_text("follower")
        page.goto(URL + "/#/services/new")
        definition = {"id": APP, "cmd": f"while true; do echo '{LINE}'; sleep 1; done",
                      "cpus": 0.1, "mem": 32, "instances": 1}
        page.get_by_label("Definition (JSON)").fill(json.dumps(definition, indent=2))
        page.get_by_role("button", name="Deploy").click()
        expect(page.get_by_role("heading", name="Service " + APP)).to_be_visible()
        summary = page.locator("section", has=page.get_by_role("heading", name="Summary"))
        expect(summary).to_contain_text("1 running, 0 staged of 1 wanted")
        page.locator("section", has=page.get_by_role("heading", name="Tasks", exact=True)).get_by_role("link").first.click()
        expect(page.get_by_label("Task log")).to_contain_text(LINE)
        expect(page.locator("section", has=page.get_by_role("heading", name="Live usage"))).to_contain_text("Memory Bytes")
        browser.close()
    check("console", not errors, f"the console shows errors: {errors}; failed requests: {failed}")
    print("all checks passed")


main()
