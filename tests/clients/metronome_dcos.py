"""Metronome's API driven by the DC/OS CLI's own Metronome client (`dcos.metronome`, PyPI
`dcos` 0.6.1, what `dcos job ...` calls): jobs with a cron schedule, runs, embeds, history,
stop, the errors it reports, and deletion, with Metronome's URL given as `job.url` (without
it, `dcos job` first asks Cosmos, which is not served, whether Metronome is there). The same
jobs are then read through Chronos's API: one store.

Usage: <python of the CLI's venv> metronome_dcos.py <master-url> <token>. Exits non-zero,
naming the call, on the first failure.
"""
import collections
import collections.abc
import json
import os
import sys
import urllib.request

# dcos 0.6.1 predates Python 3.10 (a client bug, not the server's).
for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
    setattr(collections, name, getattr(collections.abc, name))

URL, TOKEN = sys.argv[1], sys.argv[2]
# `job.url` (DCOS_JOB_URL) is where `dcos job` finds Metronome without asking Cosmos.
os.environ.update(DCOS_URL=URL, DCOS_ACS_TOKEN=TOKEN, DCOS_DIR="/nonexistent-dcos-dir",
                  DCOS_JOB_URL=URL + "/service/metronome/")

from dcos import metronome  # noqa: E402
from dcos.errors import DCOSException  # noqa: E402
from checks import check, wait  # noqa: E402

client = metronome.create_client()


def raw(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method)
    request.add_header("Authorization", f"token={TOKEN}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


job = {
    "id": "nightly.report",
    "description": "the report",
    "labels": {"team": "data"},
    "run": {"cmd": "echo report $DCOS_JOB_RUN_ID", "cpus": 0.1, "mem": 32, "disk": 0,
            "restart": {"policy": "NEVER"}},
}
added = client.add_job(job)
check("add_job", added["id"] == "nightly.report" and added["run"]["cmd"] == job["run"]["cmd"], added)
schedule = {"id": "every-minute", "cron": "* * * * *", "timezone": "Europe/Berlin",
            "startingDeadlineSeconds": 120, "concurrencyPolicy": "FORBID", "enabled": True}
made = client.add_schedule("nightly.report", schedule)
check("add_schedule", made["nextRunAt"].endswith("+0000") and made["cron"] == "* * * * *", made)
shown = client.get_schedules("nightly.report")
check("get_schedules", [s["id"] for s in shown] == ["every-minute"], shown)
check("get_schedule", client.get_schedule("nightly.report", "every-minute")["timezone"]
      == "Europe/Berlin", "timezone")

# A run now: 201 with the run, then SUCCESS in the history.
run = client.run_job("nightly.report")
check("run_job", run["jobId"] == "nightly.report" and run["createdAt"].endswith("+0000"), run)
wait("the run succeeded", lambda: client.get_job(
    "nightly.report", ["history"])["history"]["successCount"] == 1)
history = client.get_job("nightly.report", ["history", "historySummary", "schedules", "activeRuns"])
finished = history["history"]["successfulFinishedRuns"]
check("history", [r["id"] for r in finished] == [run["id"]] and history["activeRuns"] == [],
      history)
check("historySummary", history["historySummary"]["lastSuccessAt"].endswith("+0000"), history)
check("get_run finished", client.get_run("nightly.report", run["id"])["status"] == "SUCCESS",
      client.get_run("nightly.report", run["id"]))
listed = client.get_jobs(["activeRuns", "schedules", "historySummary"])
check("get_jobs", [j["id"] for j in listed] == ["nightly.report"], listed)

# PUT keeps the schedule.
changed = dict(job, description="changed")
client.update_job("nightly.report", changed)
check("update keeps schedules", client.get_schedules("nightly.report")[0]["id"] == "every-minute",
      client.get_schedules("nightly.report"))

# A long run, stopped.
sleeper = {"id": "sleeper", "run": {"cmd": "sleep 600", "cpus": 0.1, "mem": 32, "disk": 0}}
client.add_job(sleeper)
long_run = client.run_job("sleeper")
wait("active", lambda: client.get_run("sleeper", long_run["id"])["status"] == "ACTIVE")
check("get_runs", [r["id"] for r in client.get_runs("sleeper")] == [long_run["id"]],
      client.get_runs("sleeper"))
# Deleting a job with a run under way is refused unless its runs are stopped.
status, body = raw("DELETE", "/v1/jobs/sleeper")
check("409 with active runs", status == 409 and "stopCurrentJobRuns" in body["message"], body)
client.kill_run("sleeper", long_run["id"])
wait("stopped", lambda: client.get_runs("sleeper") == [], 20)
check("stopped run failed", client.get_run("sleeper", long_run["id"])["status"] == "FAILED",
      client.get_run("sleeper", long_run["id"]))

# Metronome's errors.
status, body = raw("POST", "/v1/jobs", {"id": "Bad_Id", "run": {"cmd": "x"}, "extra": 1})
paths = sorted(d["path"] for d in body["details"])
check("422", status == 422 and body["message"] == "Object is not valid" and "/extra" in paths
      and "/id" in paths and "/run/cpus" in paths, body)
status, body = raw("POST", "/v1/jobs", job)
check("409 duplicate", status == 409 and body["message"] == "Job with this id already exists", body)
status, body = raw("GET", "/v1/jobs/nope")
check("404", status == 404 and body == {"id": "nope", "message": "Job not found"}, body)
status, body = raw("GET", "/v1/jobs?embed=bogus")
check("unknown embed", status == 400 and "requestPath" in body, body)
status, body = raw("POST", "/v1/jobs/nightly.report/schedules", dict(schedule, cron="61 * * * *"))
check("bad cron", status == 422 and body["details"][0]["path"] == "/cron", body)
try:
    client.get_job("nope")
except DCOSException as error:
    check("client error", "Job not found" in str(error) or "404" in str(error), str(error))
else:
    sys.exit("get_job of an unknown job: no error")

# One store: Chronos's API shows the Metronome job.
status, chronos_jobs = raw("GET", "/v1/scheduler/jobs")
check("chronos sees it", status == 200 and "nightly.report" in [j["name"] for j in chronos_jobs],
      chronos_jobs)

# A Chronos job updated through Metronome keeps what Metronome's job does not carry.
status, _ = raw("POST", "/v1/scheduler/iso8601", {
    "name": "Chronos_Job", "command": "true", "owner": "ops@example.com", "disabled": True,
    "schedule": "R/2030-01-01T00:00:00Z/PT1H", "retries": 3, "softError": True})
check("chronos add", status == 204, status)
shown = client.get_job("Chronos_Job")
check("chronos job through metronome", shown["run"]["cmd"] == "true", shown)
client.update_job("Chronos_Job", dict(shown, description="through metronome"))
status, body = raw("GET", "/v1/scheduler/job/Chronos_Job")
check("kept through metronome's PUT", (body["description"], body["disabled"], body["owner"],
      body["retries"], body["softError"], body["schedule"]) == ("through metronome", True,
      "ops@example.com", 3, True, "R/2030-01-01T00:00:00Z/PT1H"), body)
status, body = raw("GET", "/v1/jobs/Chronos_Job/schedules/default")
check("a chronos schedule is no cron one", status == 404, (status, body))
client.remove_job("Chronos_Job")

client.remove_schedule("nightly.report", "every-minute")
check("schedule removed", client.get_schedules("nightly.report") == [], "schedules")
client.remove_job("nightly.report")
client.remove_job("sleeper")
check("gone", client.get_jobs() == [], client.get_jobs())
print("metronome (dcos client): every call passed")
