"""chronos-python (PyPI `chronos-python`) against a dcos-rs master, as a Chronos user drives
it: add jobs (ISO 8601 and dependent), list, search, run now, stats, graph, kill, delete,
and its error handling. It authenticates with HTTP Basic (any user, the token as the
password) after the 401 challenge, as httplib2 does.

Usage: chronos_python.py <master-url> <token>. Exits non-zero, naming the call, on the
first failure.
"""
import json
import logging
import sys
import time
import urllib.parse

import chronos
from checks import check, wait  # noqa: E402

URL, TOKEN = sys.argv[1], sys.argv[2]
server = urllib.parse.urlparse(URL).netloc
client = chronos.connect([server], username="chronos", password=TOKEN)
# The same client without the `/v1` prefix: Chronos serves both.
bare = chronos.ChronosClient(server, username="chronos", password=TOKEN,
                             scheduler_api_version=None)


def job(name):
    return next((j for j in client.list() if j["name"] == name), None)


start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
extract = {
    "name": "extract", "command": "echo extracted", "owner": "data@example.com",
    "disabled": False, "schedule": f"R/{start}/PT2S", "epsilon": "PT30S",
    "cpus": 0.1, "mem": 32,
}
# Mutations answer 204 with no body: the client returns None.
check("add", client.add(extract) is None, "a 204")
transform = {
    "name": "transform", "command": "echo transformed", "owner": "data@example.com",
    "disabled": False, "parents": ["extract"], "cpus": 0.1, "mem": 32,
}
check("add a dependent job", client.add(transform) is None, "a 204")

listed = client.list()
check("list", sorted(j["name"] for j in listed) == ["extract", "transform"], listed)
e = job("extract")
check("fields as given", (e["owner"], e["schedule"], e["epsilon"], e["command"]) ==
      ("data@example.com", f"R/{start}/PT2S", "PT30S", "echo extracted"), e)
check("never ran: empty strings", (e["lastSuccess"], e["lastError"]) == ("", ""), e)
check("dependent", job("transform")["parents"] == ["extract"], job("transform"))

# Both ran: extract by its schedule, transform after it.
wait("extract ran twice", lambda: job("extract")["successCount"] >= 2)
wait("transform ran after extract", lambda: job("transform")["successCount"] >= 1)
e = job("extract")
check("lastSuccess is a time", e["lastSuccess"].endswith("Z") and e["errorCount"] == 0, e)

# Search: lowercase substrings of the name or the command.
found = client.search(name="EXTR")
check("search by name", [j["name"] for j in found] == ["extract"], found)
found = client.search(command="transformed")
check("search by command", [j["name"] for j in found] == ["transform"], found)

# Update (POST again) keeps its counts; the bare client (no /v1) reads the same.
changed = dict(extract, command="echo changed")
check("update", client.update(changed) is None, "a 204")
check("updated", [j for j in bare.list() if j["name"] == "extract"][0]["command"] == "echo changed",
      bare.list())
check("counts kept", job("extract")["successCount"] >= 2, job("extract"))

# A job run on demand, with a failing command: retried (retries: 1), then counted failed.
failing = {
    "name": "failing", "command": "exit 3", "owner": "ops@example.com", "disabled": False,
    "schedule": "R0/2030-01-01T00:00:00Z/PT1H", "retries": 1, "cpus": 0.1, "mem": 32,
}
client.add(failing)
check("run now", client.run("failing") is None, "a 204")
wait("failing failed", lambda: job("failing")["errorCount"] == 1, 20)
f = job("failing")
check("failed once after its retry", (f["successCount"], f["errorsSinceLastSuccess"]) == (0, 1), f)

stat = client.job_stat("extract")
check("job stat", stat["histogram"]["count"] >= 2 and stat["taskStatHistory"], stat)
for call in [client.scheduler_stat_99th, client.scheduler_stat_98th, client.scheduler_stat_95th,
             client.scheduler_stat_75th, client.scheduler_stat_median, client.scheduler_stat_mean]:
    rows = call()
    check(call.__name__, any(r["jobNameLabel"] == "extract" for r in rows), rows)
graph = client.scheduler_graph()
check("graph csv", "link,extract,transform" in graph and "node,extract,success" in graph, graph)

# Errors: 400 with Chronos's `message`, which the client logs before it raises (it then
# tries its next server, and says none is left).
class Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = []

    def emit(self, record):
        self.seen.append(record.getMessage())


messages = Messages()
logging.getLogger("chronos").addHandler(messages)
logging.getLogger("chronos").setLevel(logging.ERROR)
for name, call, says in [
    ("an unknown job to run", lambda: client.run("nope"), "job nope does not exist"),
    ("an unknown job to delete", lambda: client.delete("nope"), "job nope does not exist"),
    ("a cycle", lambda: client.add(
        {k: v for k, v in extract.items() if k not in ("schedule", "epsilon")}
        | {"parents": ["transform"]}), "cycle: extract -> transform -> extract"),
    ("a bad schedule", lambda: client.add(dict(failing, name="bad", schedule="every day")),
     "schedule: \"every day\" is not R[n]/<start>/<period>"),
]:
    messages.seen.clear()
    try:
        call()
    except chronos.ChronosAPIError:
        check(name, any(says in m for m in messages.seen), messages.seen)
    else:
        sys.exit(f"{name}: no error")
check("nothing changed by the refusals", job("extract")["schedule"] == extract["schedule"]
      and job("bad") is None, client.list())

# The bare client updates with PUT /scheduler/iso8601 (last: from then on chronos-python
# asks every job for the legacy `async` field, a list it extends in place).
check("update without /v1",
      bare.update(dict(changed, description="bare", **{"async": False})) is None, "a 204")
check("updated without /v1", job("extract")["description"] == "bare", job("extract"))

# Kill the tasks of a job, then delete the jobs (a parent after its child).
check("kill tasks", client.delete_tasks("extract") is None, "a 204")
check("delete child", client.delete("transform") is None, "a 204")
check("delete", client.delete("extract") is None and client.delete("failing") is None, "204s")
check("gone", client.list() == [], client.list())
print("chronos-python: every call passed")
