"""A pymesos (PyPI) framework across the loss of the leading master (e2e/main.rs).

pymesos speaks plain HTTP only and, without ZooKeeper, knows one master at a time: it is
given every master's plain-HTTP scheduler listener and, as a framework without ZooKeeper
must, moves on to the next one when it has been disconnected for 2 s; a follower redirects
it (307) to the leader. The framework launches two long tasks and one that ends 8 s after
it starts, prints READY once the three run, and waits: the test kills the leader then.
After it subscribed again (with its framework id: `reregistered`) it checks that the short
task's end came, once; that both long tasks are still RUNNING on the same agents
(explicit reconciliation); that a kill through the new leader ends one of them, once; and
that no task saw any state twice (outside reconciliation's answers), but an update whose
acknowledgement the dying leader never answered (Mesos resends it: at least once).

An operator watches the whole time through the operator API's event stream (SUBSCRIBE) on
a follower that survives: the follower serves it from its own copy of the state, and it
shows each task's changes once.

Usage: pymesos_failover.py <host:port,host:port,...> <token> <follower https URL> <CA file>.
Exits non-zero, naming the step, on the first failure; prints `all checks passed` at the
end.
"""
import logging
import sys
import threading
import time
import urllib.request

from pymesos import MesosSchedulerDriver, Scheduler
from checks import check, wait
from operator_events import OperatorEvents

logging.basicConfig(level=logging.WARNING)
MASTERS, TOKEN = sys.argv[1].split(","), sys.argv[2]
FOLLOWER_URL, CA = sys.argv[3], sys.argv[4]
LONG = ["keep-1", "keep-2"]
SHORT = "ender"


def task(task_id, agent_id, command):
    return {
        "task_id": {"value": task_id},
        "agent_id": agent_id,
        "name": task_id,
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
        ],
        "command": {"value": command},
    }


class Failover(Scheduler):
    def __init__(self):
        self.lock = threading.Lock()
        self.framework_id = None
        self.reregistrations = 0
        self.updates = []
        self.to_launch = [(name, "sleep 600") for name in LONG] + [(SHORT, "sleep 8")]

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]

    def reregistered(self, driver, master_info):
        with self.lock:
            self.reregistrations += 1

    def resourceOffers(self, driver, offers):
        for offer in offers:
            with self.lock:
                # One task per offer: the tasks spread over the agents.
                launch = self.to_launch.pop(0) if self.to_launch else None
            if launch:
                name, command = launch
                driver.launchTasks(offer["id"], [task(name, offer["agent_id"], command)])
            else:
                driver.declineOffer(offer["id"], {"refuse_seconds": 60})

    def statusUpdate(self, driver, update):
        with self.lock:
            self.updates.append(dict(update))

    def states(self, task_id, reconciled=False):
        """The task's states, without (or only) the answers to reconciliation."""
        with self.lock:
            return [u["state"] for u in self.updates if u["task_id"]["value"] == task_id
                    and (u.get("reason") == "REASON_RECONCILIATION") == reconciled]

    def agent_of(self, task_id):
        with self.lock:
            found = [u["agent_id"]["value"] for u in self.updates
                     if u["task_id"]["value"] == task_id and u.get("agent_id")]
        return found[-1] if found else None


events = OperatorEvents(FOLLOWER_URL, TOKEN, CA)
wait("the follower's SUBSCRIBED", lambda: events.of_type("SUBSCRIBED"), 10)

sched = Failover()
info = {"user": "root", "name": "failover", "hostname": "localhost", "failover_timeout": 300,
        "capabilities": [{"type": "TASK_KILLING_STATE"}]}
driver = MesosSchedulerDriver(sched, info, MASTERS[0], use_addict=False,
                              principal="pymesos", secret=TOKEN)
# Mesos delivers a status update until it is acknowledged: an acknowledgement the leader
# died under (the connection closed before its answer) may see its update again from the
# next leader. Those, and only those, may repeat below.
lost_acks = set()
acknowledge = driver.acknowledgeStatusUpdate


def acknowledge_noting_losses(status):
    try:
        acknowledge(status)
    except Exception:
        lost_acks.add((status["task_id"]["value"], status["state"]))
        raise


driver.acknowledgeStatusUpdate = acknowledge_noting_losses
driver.start()

# Without ZooKeeper, the framework finds another master itself: after 2 s without a
# subscription it takes the first other master that answers `GET /version` (a follower
# redirects it to the leader, or answers 503 until there is one, and pymesos retries). Not
# again for 16 s: pymesos picks a new master up only after its current back-off sleep
# (at most 15 s).
rotations = []


def answers(master):
    try:
        urllib.request.urlopen(f"http://{master}/version", timeout=1).read()
        return True
    except OSError:
        return False


def rotate():
    down_since, changed_at = None, 0.0
    while True:
        time.sleep(0.5)
        if driver.connected:
            down_since = None
            continue
        down_since = down_since or time.time()
        if time.time() - down_since < 2 or time.time() - changed_at < 16:
            continue
        current = driver.master
        for master in MASTERS[MASTERS.index(current) + 1:] + MASTERS[:MASTERS.index(current)] \
                if current in MASTERS else MASTERS:
            if answers(master):
                rotations.append(master)
                driver.change_master(master)
                changed_at = time.time()
                break


threading.Thread(target=rotate, daemon=True).start()

wait("subscribed", lambda: sched.framework_id, 30)
for name in LONG + [SHORT]:
    wait(f"{name} running", lambda: "TASK_RUNNING" in sched.states(name), 40)
agents = {name: sched.agent_of(name) for name in LONG}
print("READY", sched.framework_id, flush=True)

wait("subscribed again after the leader's loss", lambda: sched.reregistrations, 90)
check("the same framework id", driver.framework_id == sched.framework_id,
      (driver.framework_id, sched.framework_id))
wait(f"{SHORT} finished", lambda: "TASK_FINISHED" in sched.states(SHORT), 40)

driver.reconcileTasks([{"task_id": {"value": name}} for name in LONG])
for name in LONG:
    wait(f"{name} reconciled", lambda: sched.states(name, reconciled=True), 20)
    check(f"{name} still running", sched.states(name, reconciled=True)[-1] == "TASK_RUNNING",
          sched.states(name, reconciled=True))
    check(f"{name} on the same agent", sched.agent_of(name) == agents[name],
          (sched.agent_of(name), agents[name]))

driver.killTask({"value": LONG[0]})
wait(f"{LONG[0]} killed", lambda: "TASK_KILLED" in sched.states(LONG[0]), 30)
time.sleep(3)  # a second copy of any update would have come by now

for name in LONG + [SHORT]:
    states = sched.states(name)
    repeated = {state for state in states if states.count(state) > 1}
    check(f"{name}: no state twice but one whose acknowledgement was lost",
          all((name, state) in lost_acks and states.count(state) == 2 for state in repeated),
          (states, sorted(lost_acks)))
check(f"{LONG[1]} not ended", sched.states(LONG[1])[-1] == "TASK_RUNNING", sched.states(LONG[1]))

# The operator's stream on the surviving follower went on through the leader's loss.
check("FRAMEWORK_ADDED on the follower's stream",
      any(e["framework_added"]["framework"]["framework_info"]["id"]["value"] == sched.framework_id
          for e in events.of_type("FRAMEWORK_ADDED")), events.of_type("FRAMEWORK_ADDED"))
for name, last in [(LONG[0], "TASK_KILLED"), (LONG[1], "TASK_RUNNING"), (SHORT, "TASK_FINISHED")]:
    seen = events.task_states(name)
    check(f"{name} on the operator's stream: added, then each state once, ending {last}",
          seen and seen[-1] == last and len(seen) == len(set(seen)), seen)
check("the operator's stream is still open", events.ended is None, events.ended)
events.close()
print("masters tried after the loss:", rotations)
print("updates:", {name: sched.states(name) for name in LONG + [SHORT]})
driver.stop(failover=True)
print("all checks passed")
