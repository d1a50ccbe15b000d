"""The dashboard in Debian's headless chromium, driven by Playwright (PyPI), as a user would:
log in with the token, deploy an app from the editor (first with a mistake the editor must
show at its field), see it running without a reload, scale it, read a line of its task's
live log, run a job and see the run in its history with its output, drain the agent.
The browser's console must stay free of errors (the one deliberate 422 aside). A
screenshot of every page is written to the directory given.

usage: dashboard_ui.py <master url> <token> <screenshots dir> <the build nodes show>
"""
import json
import os
import sys
import urllib.request

from playwright.sync_api import sync_playwright, expect

from checks import check

URL, TOKEN, SHOTS, BUILD = sys.argv[1:5]
os.makedirs(SHOTS, exist_ok=True)
TIMEOUT_MS = 30_000
APP = "/dash/web"
JOB_PARENT, JOB, JOB_CRON = "dash-extract", "dash-report", "dash-nightly"
LOG_LINE = "dashboard says hello"
ERR_LINE = "dashboard complains"
JOB_LINE = "the report is done"


def api(method, path, body=None):
    """The API directly, for what the test sets up beside the page (a job with a parent)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method, headers={
        "Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
        return json.loads(text) if text else None


def shot(page, name):
    page.wait_for_timeout(300)
    page.evaluate("document.getElementById('toasts').replaceChildren()")
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def main():
    expect.set_options(timeout=TIMEOUT_MS)
    # Two jobs, the second after the first (Chronos's parents), for the graph and a run.
    api("POST", "/v1/jobs", {"id": JOB_PARENT, "run": {"cmd": "echo extracted", "cpus": 0.1, "mem": 32, "disk": 0}})
    api("POST", "/scheduler/dependency", {"name": JOB, "command": f"echo '{JOB_LINE}'", "parents": [JOB_PARENT],
                                          "cpus": 0.1, "mem": 32, "owner": "ops@example.com"})
    # And one on a cron schedule (Metronome's), to disable and enable from its page.
    api("POST", "/v1/jobs", {"id": JOB_CRON, "run": {"cmd": "true", "cpus": 0.1, "mem": 32, "disk": 0}})
    api("POST", f"/v1/jobs/{JOB_CRON}/schedules", {"id": "nightly", "cron": "30 2 * * *", "timezone": "UTC",
                                                    "enabled": True})

    console_errors = []
    failed_requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1366, "height": 900}, color_scheme="light")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
        page.on("pageerror", lambda e: console_errors.append("uncaught: " + str(e)))
        # Which requests failed, to name them when the console shows their errors.
        context.on("response", lambda r: r.status >= 400 and failed_requests.append(f"{r.status} {r.request.method} {r.url}"))

        # Log in: without a token the page asks for one; a wrong one is refused with a reason.
        page.goto(URL + "/")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        shot(page, "login")
        page.get_by_label("API token").fill("dcos_" + "x" * 43)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("The token was refused")
        # The console shows that 401 (the browser reports every failed request); nothing else.
        check("the refused token", len(console_errors) == 1 and "401" in console_errors[0],
              f"one 401 in the console: {console_errors}")
        console_errors.clear()
        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        expect(page.get_by_role("heading", name="Masters")).to_be_visible()
        expect(page.locator("#live")).to_have_text("● live")

        # Deploy from the editor: a mistake first, shown at its field's line.
        page.get_by_role("link", name="Services", exact=True).click()
        page.get_by_role("link", name="Deploy a service").click()
        editor = page.get_by_label("Definition (JSON)")
        definition = {"id": APP, "cmd": f"i=0; while true; do echo \"{LOG_LINE} $i\"; echo \"{ERR_LINE} $i\" >&2; i=$((i+1)); sleep 1; done",
                      "cpus": -1, "mem": 32, "instances": 1}
        editor.fill(json.dumps(definition, indent=2))
        page.get_by_role("button", name="Deploy").click()
        errors = page.locator("ul.editor-errors")
        expect(errors).to_contain_text("line 4")
        expect(errors).to_contain_text("/cpus")
        expect(page.locator(".editor-backdrop .err-line")).to_have_count(1)
        shot(page, "service-editor-error")
        # The one error the console may show: the API's 422 for that definition.
        check("the invalid definition", len(console_errors) == 1 and "422" in console_errors[0],
              f"one 422 in the console: {console_errors}")
        console_errors.clear()
        definition["cpus"] = 0.1
        editor.fill(json.dumps(definition, indent=2))
        page.get_by_role("button", name="Deploy").click()

        # Its page; it becomes running without a reload (the event stream redraws it).
        expect(page.get_by_role("heading", name="Service " + APP)).to_be_visible()
        page.evaluate("window.__noReload = true")
        summary = page.locator("section", has=page.get_by_role("heading", name="Summary"))
        expect(summary).to_contain_text("1 running, 0 staged of 1 wanted")
        check("no reload", page.evaluate("window.__noReload === true"), "the page was reloaded")

        # Scale to 2 through the dialog.
        page.get_by_role("button", name="Scale").click()
        page.get_by_label("Instances").fill("2")
        page.get_by_role("dialog").get_by_role("button", name="Scale").click()
        expect(summary).to_contain_text("2 running, 0 staged of 2 wanted")
        check("no reload", page.evaluate("window.__noReload === true"), "the page was reloaded")
        expect(page.get_by_role("heading", name="Versions (2)")).to_be_visible()
        # The diff of the two versions: the instances changed, nothing else is shown.
        expect(page.locator("pre.diff-lines .d-del")).to_have_text('-   "instances": 1,')
        expect(page.locator("pre.diff-lines .d-add")).to_have_text('+   "instances": 2,')
        shot(page, "service")

        # A task's page: its live log shows a line the task prints.
        page.locator("section", has=page.get_by_role("heading", name="Tasks", exact=True)).get_by_role("link").first.click()
        expect(page.get_by_role("heading", name="Status history")).to_be_visible()
        log = page.get_by_label("Task log")
        expect(log).to_contain_text(LOG_LINE)
        first = log.inner_text()
        expect(log).not_to_have_text(first)  # it follows: more lines arrive
        log_section = page.locator("section", has=page.get_by_role("heading", name="Log", exact=True))
        log_section.get_by_role("button", name="stderr").click()
        expect(log).to_contain_text(ERR_LINE)
        expect(log).not_to_contain_text(LOG_LINE)
        log_section.get_by_role("button", name="stdout").click()
        expect(log).to_contain_text(LOG_LINE)
        sandbox = page.locator("section", has=page.get_by_role("heading", name="Sandbox"))
        sandbox.get_by_role("button", name="stdout").click()
        expect(sandbox.locator("pre.file")).to_contain_text(LOG_LINE)
        expect(page.locator("section", has=page.get_by_role("heading", name="Live usage"))).to_contain_text("Memory Bytes")
        shot(page, "task")

        # Back on the service: roll back to one instance, then restart it (a new task).
        page.go_back()
        expect(page.get_by_role("heading", name="Service " + APP)).to_be_visible()
        page.get_by_role("button", name="Roll back").click()
        page.get_by_role("dialog").get_by_role("button", name="Roll back").click()
        expect(summary).to_contain_text("1 running, 0 staged of 1 wanted")
        tasks_section = page.locator("section", has=page.get_by_role("heading", name="Tasks", exact=True))
        expect(tasks_section.get_by_role("link")).to_have_count(1)
        before = tasks_section.get_by_role("link").inner_text()
        page.get_by_role("button", name="Restart").click()
        page.get_by_role("dialog").get_by_role("button", name="Restart").click()
        expect(tasks_section.get_by_role("link", name=before)).to_have_count(0)
        expect(tasks_section.get_by_role("link")).to_have_count(1)
        expect(summary).to_contain_text("1 running, 0 staged of 1 wanted")

        page.get_by_role("link", name="Tasks", exact=True).click()
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
        page.get_by_label("Filter tasks").fill("dash/web")
        expect(page.locator("main")).to_contain_text("killed")  # the instance rolled back, the one restarted
        page.get_by_label("State").select_option("TASK_RUNNING")
        expect(page.locator("main tbody tr")).to_have_count(1)
        shot(page, "tasks")

        # Jobs: the list says the schedule in words; run the parent now, its child follows,
        # and the child's run shows up in its history with its output.
        page.get_by_role("link", name="Jobs", exact=True).click()
        expect(page.get_by_role("link", name=JOB)).to_be_visible()
        shot(page, "jobs")
        page.get_by_role("link", name=JOB_PARENT).click()
        expect(page.get_by_role("group", name="Dependency graph of " + JOB_PARENT)).to_be_visible()
        page.get_by_role("button", name="Run now").click()
        expect(page.get_by_role("heading", name="Run history (1)")).to_be_visible()
        page.get_by_role("group", name="Dependency graph of " + JOB_PARENT).get_by_role("link", name=JOB).click()
        expect(page.get_by_role("heading", name="Job " + JOB)).to_be_visible()
        run = page.locator("details.run").first
        expect(run).to_contain_text("success")
        run.locator("summary").click()
        expect(run).to_contain_text(JOB_LINE)
        shot(page, "job")

        # A cron job's schedule, disabled and enabled again from its page.
        page.get_by_role("link", name="Jobs", exact=True).click()
        page.get_by_role("link", name=JOB_CRON).click()
        expect(page.locator("main")).to_contain_text("at 02:30")
        page.get_by_role("button", name="Disable").click()
        expect(page.get_by_role("button", name="Enable")).to_be_visible()
        expect(page.locator("main")).to_contain_text("(disabled)")
        page.get_by_role("button", name="Enable").click()
        expect(page.get_by_role("button", name="Disable")).to_be_visible()
        expect(page.locator("main")).not_to_contain_text("(disabled)")

        page.get_by_role("link", name="Frameworks", exact=True).click()
        expect(page.get_by_role("heading", name="marathon")).to_be_visible()
        shot(page, "frameworks")

        page.get_by_role("link", name="Overview", exact=True).click()
        expect(page.get_by_role("heading", name="Recent events")).to_be_visible()
        expect(page.locator("section", has=page.get_by_role("heading", name="Tasks", exact=True))).to_contain_text("running")
        shot(page, "overview")

        # Remove the service from its page.
        page.get_by_role("link", name="Services", exact=True).click()
        page.get_by_role("link", name=APP).click()
        page.get_by_role("button", name="Remove").click()
        page.get_by_role("dialog").get_by_role("button", name="Remove").click()
        expect(page.get_by_role("heading", name="Services")).to_be_visible()
        expect(page.get_by_text("No services yet")).to_be_visible()

        # Drain the agent from its page.
        page.get_by_role("link", name="Nodes", exact=True).click()
        expect(page.get_by_role("heading", name="Agents")).to_be_visible()
        expect(page.locator("main")).to_contain_text(BUILD)
        shot(page, "nodes")
        page.locator("section", has=page.get_by_role("heading", name="Agents")).get_by_role("link").first.click()
        page.get_by_role("button", name="Drain").click()
        page.get_by_role("dialog").get_by_role("button", name="Drain").click()
        expect(page.get_by_role("button", name="Draining")).to_be_disabled()
        expect(page.locator(".page-head .badge")).to_have_text("draining")
        shot(page, "node")

        # The same pages at phone width and in the dark theme.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True)
        mobile = phone.new_page()
        mobile.on("console", lambda m: m.type == "error" and console_errors.append("phone: " + m.text))
        mobile.goto(URL + "/?token=" + TOKEN + "#/jobs")
        expect(mobile.get_by_role("link", name=JOB_CRON)).to_be_visible()
        check("the token leaves the address bar", "token" not in mobile.url, mobile.url)
        width = mobile.evaluate("document.documentElement.scrollWidth")
        check("phone width", width <= 390, f"the page is {width} px wide at 390")
        background = mobile.evaluate("getComputedStyle(document.body).backgroundColor")
        check("dark theme", background == "rgb(15, 20, 27)", f"the system's dark theme is followed: {background}")
        shot(mobile, "jobs-phone-dark")

        # Keyboard: the skip link, then the navigation, reached with Tab alone.
        keys = context.new_page()
        keys.on("console", lambda m: m.type == "error" and console_errors.append("keyboard: " + m.text))
        keys.goto(URL + "/?token=" + TOKEN + "#/services")
        expect(keys.get_by_text("No services yet")).to_be_visible()
        focused = lambda: keys.evaluate("document.activeElement.textContent")
        keys.keyboard.press("Tab")
        check("keyboard", focused() == "Skip to content", f"Tab reaches the skip link first, not {focused()!r}")
        keys.keyboard.press("Tab")
        keys.keyboard.press("Tab")
        check("keyboard", focused() == "Overview", f"Tab reaches the navigation, not {focused()!r}")
        keys.keyboard.press("Enter")
        expect(keys.get_by_role("heading", name="Overview")).to_be_visible()
        # The skip link moves the focus to the page and leaves the route alone.
        keys.keyboard.press("Shift+Tab")
        keys.keyboard.press("Shift+Tab")
        check("keyboard", focused() == "Skip to content", f"back on the skip link, not {focused()!r}")
        keys.keyboard.press("Enter")
        check("skip link", keys.evaluate("document.activeElement.id") == "main" and keys.url.endswith("#/"),
              keys.url)

        # One event stream for the tabs: this second tab gets its events through the first;
        # once the first closes, it reads the stream itself and still sees changes live.
        expect(keys.locator("#live")).to_have_text("● live")
        keys.goto(URL + "/#/services")
        page.close()
        api("POST", "/v2/apps", {"id": "/dash/late", "cmd": "sleep 600", "cpus": 0.1, "mem": 16})
        expect(keys.get_by_role("link", name="/dash/late")).to_be_visible(timeout=10_000)
        expect(keys.locator("#live")).to_have_text("● live")

        browser.close()
    check("console", not console_errors,
          f"the browser's console shows errors: {console_errors}; failed requests: {failed_requests}")
    print("dashboard ok; screenshots in", SHOTS)


main()
