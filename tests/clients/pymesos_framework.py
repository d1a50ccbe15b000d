"""pymesos (PyPI) as an external framework against a dcos-rs master, through Mesos's v1
scheduler API: subscribe (HTTP Basic: principal and the token as secret), take offers,
launch two command tasks (one finishes, one runs), kill the running one, reconcile
(implicit and explicit), see an oversized launch and one on a used offer refused, tear down,
all of it also seen on the operator API's event stream (SUBSCRIBE);
then failover: a framework that disconnects and subscribes again within its
failover_timeout keeps its task, one that stays away past it loses it.

Usage: pymesos_framework.py <master-url> <token>. Exits non-zero, naming the step, on the
first failure.
"""
import json
import logging
import sys
import threading
import time
import urllib.parse
import urllib.request

from pymesos import MesosSchedulerDriver, Scheduler
from checks import check, wait  # noqa: E402
from operator_events import OperatorEvents  # noqa: E402

logging.basicConfig(level=logging.WARNING)
URL, TOKEN = sys.argv[1], sys.argv[2]
MASTER = urllib.parse.urlparse(URL).netloc


def api(path):
    request = urllib.request.Request(URL + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def api_post(path, body):
    request = urllib.request.Request(URL + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def resources(cpus, mem):
    return [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
    ]


def task(task_id, agent_id, command, cpus=0.1, mem=32):
    return {
        "task_id": {"value": task_id},
        "agent_id": agent_id,
        "name": task_id,
        "resources": resources(cpus, mem),
        "command": {"value": command, "environment": {"variables": [{"name": "GREETING", "value": "hi"}]}},
    }


class Recorder(Scheduler):
    """Keeps every offer and update; launches what `plan` says on the next offer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.framework_id = None
        self.offers = []
        self.updates = []
        self.errors = []
        self.plan = []  # task builders: agent_id -> task
        self.used_offers = []

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]

    def reregistered(self, driver, master_info):
        # A subscription with the framework's id (pymesos calls this instead).
        self.framework_id = driver.framework_id

    def resourceOffers(self, driver, offers):
        with self.lock:
            self.offers.extend(offers)
            plan, self.plan = self.plan, []
        for offer in offers:
            if plan:
                tasks = [build(offer["agent_id"]) for build in plan]
                plan = []
                driver.launchTasks(offer["id"], tasks, {"refuse_seconds": 1})
                self.used_offers.append(offer["id"])
            else:
                driver.declineOffer(offer["id"], {"refuse_seconds": 1})

    def statusUpdate(self, driver, update):
        with self.lock:
            self.updates.append(dict(update))

    def error(self, driver, message):
        self.errors.append(message)

    def states(self, task_id):
        with self.lock:
            return [u["state"] for u in self.updates if u["task_id"]["value"] == task_id]

    def last(self, task_id, state=None):
        with self.lock:
            found = [u for u in self.updates if u["task_id"]["value"] == task_id
                     and (state is None or u["state"] == state)]
        return found[-1] if found else None


def framework(name, timeout, framework_id=None):
    info = {"user": "root", "name": name, "hostname": "localhost", "failover_timeout": timeout,
            "capabilities": [{"type": "TASK_KILLING_STATE"}]}
    if framework_id:
        info["id"] = {"value": framework_id}
    return info


def start(sched, info):
    driver = MesosSchedulerDriver(sched, info, MASTER, use_addict=False,
                                  principal="pymesos", secret=TOKEN)
    driver.start()
    wait("subscribed", lambda: sched.framework_id, 20)
    return driver


# --- The minimal framework -----------------------------------------------------------
version = json.loads(urllib.request.urlopen(URL + "/version", timeout=10).read())["version"]
check("/version is X.Y.Z", all(p.isdigit() for p in version.split(".")) and len(version.split(".")) == 3, version)

# An operator watches through the operator API's event stream from the start.
events = OperatorEvents(URL, TOKEN)
wait("SUBSCRIBED first", lambda: events.events, 10)
first = events.events[0]
check("SUBSCRIBED with the whole state", first["type"] == "SUBSCRIBED"
      and "get_tasks" in first["subscribed"]["get_state"]
      and first["subscribed"]["heartbeat_interval_seconds"] > 0, first)
check("the stream is JSON", events.content_type == "application/json", events.content_type)

sched = Recorder()
driver = start(sched, framework("minimal", 3600))
offer = wait("an offer", lambda: sched.offers and sched.offers[0], 20)
names = {r["name"] for r in offer["resources"]}
check("offer resources", {"cpus", "mem"} <= names and offer["hostname"], offer)
check("offer names its agent's address", offer["url"]["address"]["port"] > 0
      and offer["url"]["scheme"] in ("http", "https"), offer)
cpus = next(r["scalar"]["value"] for r in offer["resources"] if r["name"] == "cpus")

sched.plan = [
    lambda agent: task("finisher", agent, 'echo "$GREETING from $MESOS_TASK_ID"; sleep 1'),
    lambda agent: task("runner", agent, "sleep 600"),
]
wait("finisher finished", lambda: "TASK_FINISHED" in sched.states("finisher"), 40)
wait("runner running", lambda: "TASK_RUNNING" in sched.states("runner"), 40)
finished = sched.last("finisher", "TASK_FINISHED")
check("an update names its agent and carries a uuid",
      finished["agent_id"]["value"] and finished.get("uuid") and finished["source"] == "SOURCE_EXECUTOR", finished)
check("finisher's states in order", sched.states("finisher")[-1] == "TASK_FINISHED", sched.states("finisher"))

# Seen by the operator API too, as the framework's.
tasks = api("/master/tasks")["tasks"]
ours = {t["id"]: t["state"] for t in tasks if t["framework_id"] == sched.framework_id}
check("the tasks are in Mesos's task list", ours == {"finisher": "TASK_FINISHED", "runner": "TASK_RUNNING"}, tasks)

# The operator API and Mesos's state show the framework with its tasks, as the framework's.
frameworks = {f["id"]: f for f in api("/master/frameworks")["frameworks"]}
mine = frameworks.get(sched.framework_id, {})
check("/master/frameworks lists it with its tasks",
      mine.get("name") == "minimal" and mine.get("active") is True
      and {t["id"] for t in mine["tasks"]} == {"runner"}
      and {t["id"] for t in mine["completed_tasks"]} == {"finisher"}, mine)
check("the built-in frameworks are frameworks too",
      {"dcos-rs-services", "dcos-rs-jobs"} <= set(frameworks), sorted(frameworks))
operator = api_post("/api/v1", {"type": "GET_FRAMEWORKS"})
listed = {f["framework_info"]["id"]["value"]: f for f in operator["get_frameworks"]["frameworks"]}
check("GET_FRAMEWORKS", operator["type"] == "GET_FRAMEWORKS"
      and listed[sched.framework_id]["framework_info"]["name"] == "minimal"
      and listed[sched.framework_id]["connected"] is True, operator)
summary = api("/master/state-summary")
mine = next(f for f in summary["frameworks"] if f["id"] == sched.framework_id)
check("state-summary counts its tasks", mine["TASK_RUNNING"] == 1 and mine["TASK_FINISHED"] == 1, mine)

# A launch too large for the offer is refused as TASK_ERROR, never launched.
sched.plan = [lambda agent: task("oversized", agent, "sleep 1", cpus=cpus * 100)]
driver.reviveOffers()
wait("oversized refused", lambda: sched.states("oversized"), 20)
check("oversized is TASK_ERROR", sched.states("oversized") == ["TASK_ERROR"], sched.updates)
check("refusal says why", "needs" in sched.last("oversized")["message"], sched.last("oversized"))

# An offer used already: the launch is dropped (TASK_LOST without PARTITION_AWARE).
used = sched.used_offers[0]
driver.launchTasks(used, [task("late", offer["agent_id"], "sleep 1")])
wait("launch on a used offer refused", lambda: sched.states("late"), 20)
check("late is TASK_LOST", sched.states("late") == ["TASK_LOST"], sched.states("late"))

# Kill: TASK_KILLING (the framework has the capability), then TASK_KILLED.
driver.killTask({"value": "runner"})
wait("runner killed", lambda: "TASK_KILLED" in sched.states("runner"), 30)
check("killing before killed", sched.states("runner")[-2:] == ["TASK_KILLING", "TASK_KILLED"],
      sched.states("runner"))

# A KILL's own kill_policy overrides the launch's: a task that ignores SIGTERM, launched
# with 60 s of grace, is SIGKILLed 1 s after a KILL that grants 1 s. (pymesos's killTask
# cannot carry a kill_policy: the same call goes through its own transport.)
sched.plan = [lambda agent: dict(task("stubborn", agent, "trap '' TERM; sleep 600"),
                                 kill_policy={"grace_period": {"nanoseconds": 60_000_000_000}})]
driver.reviveOffers()
wait("stubborn running", lambda: "TASK_RUNNING" in sched.states("stubborn"), 40)
time.sleep(1)  # its shell has set the trap
killed_at = time.time()
driver._send({"type": "KILL", "framework_id": {"value": sched.framework_id},
              "kill": {"task_id": {"value": "stubborn"},
                       "kill_policy": {"grace_period": {"nanoseconds": 1_000_000_000}}}})
wait("stubborn killed", lambda: "TASK_KILLED" in sched.states("stubborn"), 40)
took = time.time() - killed_at
check("the kill's grace period (1 s) applied, not the launch's (60 s)", 0.9 <= took < 15, took)

# Reconcile: every task (implicit), then one known and one unknown (explicit).
before = len(sched.updates)
driver.reconcileTasks([])
wait("implicit reconciliation", lambda: len([u for u in sched.updates[before:]
                                              if u.get("reason") == "REASON_RECONCILIATION"]) >= 2, 20)
implicit = {u["task_id"]["value"]: u["state"] for u in sched.updates[before:]}
check("implicit: both tasks' last states", implicit.get("finisher") == "TASK_FINISHED"
      and implicit.get("runner") == "TASK_KILLED", implicit)
check("reconciliation carries no uuid", all("uuid" not in u for u in sched.updates[before:]), sched.updates[before:])
before = len(sched.updates)
driver.reconcileTasks([{"task_id": {"value": "finisher"}}, {"task_id": {"value": "nonesuch"}}])
wait("explicit reconciliation", lambda: len(sched.updates) >= before + 2, 20)
explicit = {u["task_id"]["value"]: u["state"] for u in sched.updates[before:]}
check("explicit", explicit == {"finisher": "TASK_FINISHED", "nonesuch": "TASK_LOST"}, explicit)

# Every update with a uuid was acknowledged (pymesos does it implicitly): none comes twice.
uuids = [u["uuid"] for u in sched.updates if "uuid" in u]
check("no update delivered twice", len(uuids) == len(set(uuids)), uuids)
check("no error event", not sched.errors, sched.errors)

# The operator's stream saw it all, each change once.
def added(kind, key):
    return [e[kind.lower()][key] for e in events.of_type(kind)]


check("FRAMEWORK_ADDED", any(f["framework_info"]["id"]["value"] == sched.framework_id
                             and f["framework_info"]["name"] == "minimal"
                             for f in added("FRAMEWORK_ADDED", "framework")), events.events[-5:])
wait("the runner's end on the operator's stream", lambda: "TASK_KILLED" in events.task_states("runner"), 10)
check("finisher's states, once each", events.task_states("finisher")[-1] == "TASK_FINISHED"
      and len(events.task_states("finisher")) == len(set(events.task_states("finisher"))),
      events.task_states("finisher"))
# The operator stream says how the state changed since its last look (at most every 50 ms),
# so a kill that ends within one look shows KILLED without KILLING; the scheduler's own
# updates (checked above) carry every state.
check("runner's states, once each", events.task_states("runner")[-1:] == ["TASK_KILLED"]
      and set(events.task_states("runner")) <= {"TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_KILLED"}
      and len(events.task_states("runner")) == len(set(events.task_states("runner"))),
      events.task_states("runner"))
check("TASK_ADDED first", all(events.task_states(t) and
                              [e for e in events.of_type("TASK_ADDED")
                               if e["task_added"]["task"]["task_id"]["value"] == t]
                              for t in ("finisher", "runner")), events.events)

# Teardown: the framework is gone; a subscription with its id gets an ERROR.
first_id = sched.framework_id
driver.stop()
driver.join()
wait("FRAMEWORK_REMOVED", lambda: any(f["id"]["value"] == first_id
                                      for f in added("FRAMEWORK_REMOVED", "framework_info")), 20)
check("the stream is still open", events.ended is None, events.ended)
events.close()
again = Recorder()
d = MesosSchedulerDriver(again, framework("minimal", 3600, first_id), MASTER, principal="pymesos", secret=TOKEN)
d.start()
wait("a removed framework is refused", lambda: again.errors, 20)
check("refused by name", first_id in again.errors[0], again.errors)
d.stop(failover=True)
print("minimal framework: ok")

# --- Failover -------------------------------------------------------------------------
def launch_sleeper(name, timeout):
    s = Recorder()
    s.plan = [lambda agent: task("sleeper", agent, "sleep 600")]
    d = start(s, framework(name, timeout))
    wait(f"{name}: sleeper running", lambda: "TASK_RUNNING" in s.states("sleeper"), 40)
    return s, d


# Each goes away without a teardown (a scheduler crash), one after the other: pymesos's
# drivers share one dict of request headers (a mutable default argument of `_send`), so
# two drivers making calls at once in one process may send each other's Mesos-Stream-Id.
keeper, d1 = launch_sleeper("keeper", 600)
time.sleep(1)  # its acknowledgement of TASK_RUNNING goes out
d1.stop(failover=True)
d1.join()
short, d2 = launch_sleeper("short", 2)
time.sleep(1)
d2.stop(failover=True)
d2.join()
time.sleep(5)
# The one within its timeout subscribes again with its id and finds its task running.
back = Recorder()
d3 = start(back, framework("keeper", 600, keeper.framework_id))
check("same framework id", back.framework_id == keeper.framework_id, back.framework_id)
d3.reconcileTasks([{"task_id": {"value": "sleeper"}}])
wait("keeper's task reconciled", lambda: back.states("sleeper"), 20)
check("keeper's task still runs", back.states("sleeper")[-1] == "TASK_RUNNING", back.states("sleeper"))
# The one past its timeout was removed and its task killed.
def sleeper_of(framework_id):
    tasks = api("/master/tasks")["tasks"]
    return next((t for t in tasks if t["framework_id"] == framework_id), None)


wait("short's task killed", lambda: (sleeper_of(short.framework_id) or {}).get("state") in
     ("TASK_KILLED", "TASK_FAILED", None), 30)
gone = Recorder()
d4 = MesosSchedulerDriver(gone, framework("short", 2, short.framework_id), MASTER, principal="pymesos", secret=TOKEN)
d4.start()
wait("short is refused after its failover timeout", lambda: gone.errors, 20)
d4.stop(failover=True)
d3.stop(failover=True)
d3.join()
print("failover: ok")

# --- An operator tears the keeper down with Mesos's form --------------------------------
form = urllib.request.Request(URL + "/master/teardown", method="POST",
                              data=f"frameworkId={keeper.framework_id}".encode(),
                              headers={"Authorization": f"Bearer {TOKEN}",
                                       "Content-Type": "application/x-www-form-urlencoded"})
with urllib.request.urlopen(form, timeout=10) as answer:
    check("teardown answers 200", answer.status == 200, answer.status)
wait("keeper's task killed by the teardown", lambda: (sleeper_of(keeper.framework_id) or {}).get("state") in
     ("TASK_KILLED", None), 30)
listed = {f["id"] for f in api("/master/frameworks")["frameworks"]}
check("keeper is gone", keeper.framework_id not in listed, listed)
print("operator teardown: ok")
