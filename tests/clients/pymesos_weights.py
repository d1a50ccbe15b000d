"""Two pymesos frameworks in roles of weights 1 and 3 (set through Mesos's `PUT /weights`)
compete for one agent: each launches a short task from every offer it gets, for ever. Over
a minute of that contention, what each holds (sampled from the master) and what each took
from its offers must be in the ratio 1:3 within 10 % (the issue's bound; measured
2.93-3.01 on an idle machine, 2.72 with three busy loops on the 2 cores).

Usage: pymesos_weights.py <master-url> <token> [seconds]. Prints the figures; exits
non-zero, naming the step, on the first failure.
"""
import json
import logging
import multiprocessing
import sys
import threading
import time
import urllib.parse
import urllib.request

from pymesos import MesosSchedulerDriver, Scheduler
from checks import check, wait  # noqa: E402

logging.basicConfig(level=logging.WARNING)
URL, TOKEN = sys.argv[1], sys.argv[2]
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
MASTER = urllib.parse.urlparse(URL).netloc
TASK_CPUS, TASK_MEM = 0.1, 16


def api(path, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read()
        return json.loads(text) if text else None


def scalar(offer, name):
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == name)


class Greedy(Scheduler):
    """Wants `sleep 1` tasks without end: launches one from every offer and gives the
    rest back at once (no filter), as a framework that places one task at a time does."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.framework_id = None
        self.counting = False
        self.launched = 0
        self.launched_cpus = 0.0
        self.errors = []

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]

    def resourceOffers(self, driver, offers):
        for offer in offers:
            if scalar(offer, "cpus") + 1e-9 < TASK_CPUS or scalar(offer, "mem") < TASK_MEM:
                driver.declineOffer(offer["id"], {"refuse_seconds": 0})
                continue
            with self.lock:
                name = f"{self.name}-{self.launched}"
                self.launched += 1
                if self.counting:
                    self.launched_cpus += TASK_CPUS
            task = {
                "task_id": {"value": name},
                "agent_id": offer["agent_id"],
                "name": name,
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": TASK_CPUS}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": TASK_MEM}},
                ],
                "command": {"value": "sleep 1"},
            }
            driver.launchTasks(offer["id"], [task], {"refuse_seconds": 0})

    def statusUpdate(self, driver, update):
        if update["state"] in ("TASK_ERROR", "TASK_LOST", "TASK_DROPPED"):
            with self.lock:
                self.errors.append(update)

    def error(self, driver, message):
        self.errors.append(message)


def run_framework(role, started, counting, stop, results):
    """One framework in a process of its own: pymesos's drivers share one dict of request
    headers (a mutable default argument of `_send`), so two drivers in one process can
    send a call with the other's Mesos-Stream-Id, which the master refuses (400)."""
    logging.basicConfig(level=logging.WARNING)
    sched = Greedy(role)
    info = {"user": "root", "name": f"greedy-{role}", "hostname": "localhost",
            "failover_timeout": 60, "roles": [role],
            "capabilities": [{"type": "MULTI_ROLE"}]}
    driver = MesosSchedulerDriver(sched, info, MASTER, use_addict=False,
                                  principal="pymesos", secret=TOKEN)
    driver.start()
    wait(f"{role} subscribed", lambda: sched.framework_id, 20)
    started.put((role, sched.framework_id))
    counting.wait()
    with sched.lock:
        sched.counting = True
    stop.wait()
    with sched.lock:
        sched.counting = False
        results.put((role, sched.launched, sched.launched_cpus, [str(e) for e in sched.errors[:3]]))
    driver.stop()
    driver.join()


def main():
    # The operator sets the weights; the master shows them back.
    api("/weights", "PUT", [{"role": "low", "weight": 1.0}, {"role": "high", "weight": 3.0}])
    weights = {w["role"]: w["weight"] for w in api("/weights")}
    # A role back at the default weight (1) is not listed.
    check("weights set", weights.get("high") == 3.0 and weights.get("low", 1.0) == 1.0, weights)

    processes = multiprocessing.get_context("spawn")
    started, results = processes.Queue(), processes.Queue()
    counting, stop = processes.Event(), processes.Event()
    children = []
    framework_ids = {}
    for role in ("low", "high"):
        child = processes.Process(target=run_framework, args=(role, started, counting, stop, results))
        child.start()
        children.append(child)
        name, framework_id = started.get(timeout=60)
        framework_ids[name] = framework_id

    roles = {r["name"]: r for r in api("/master/roles")["roles"]}
    check("roles listed with their weights and frameworks",
          roles.get("high", {}).get("weight") == 3.0 and len(roles["high"]["frameworks"]) == 1, roles)

    def held():
        """The cpus each role's framework holds now, as the master accounts it."""
        views = {v["id"]: v for v in api("/cluster/v1/frameworks")}
        return {role: views[framework_id]["used"]["cpus"] for role, framework_id in framework_ids.items()}

    # Contention first settles (both frameworks hold something), then is measured.
    wait("both frameworks hold resources", lambda: all(v > 0 for v in held().values()), 30)
    time.sleep(5)
    counting.set()
    samples = {"low": [], "high": []}
    deadline = time.time() + SECONDS
    while time.time() < deadline:
        for role, cpus in held().items():
            samples[role].append(cpus)
        time.sleep(0.5)
    stop.set()
    launched, offered, errors = {}, {}, {}
    for _ in children:
        role, count, cpus, failures = results.get(timeout=60)
        launched[role], offered[role], errors[role] = count, cpus, failures
    for child in children:
        child.join(timeout=30)

    mean = {role: sum(v) / len(v) for role, v in samples.items()}
    held_ratio = mean["high"] / mean["low"] if mean["low"] else float("inf")
    offered_ratio = offered["high"] / offered["low"] if offered["low"] else float("inf")
    print(f"held cpus (mean of {len(samples['low'])} samples): low {mean['low']:.2f}, high {mean['high']:.2f}, "
          f"ratio {held_ratio:.2f}; cpus taken from offers: low {offered['low']:.1f}, high {offered['high']:.1f}, "
          f"ratio {offered_ratio:.2f}; tasks launched: low {launched['low']}, high {launched['high']}")
    for role in ("low", "high"):
        check(f"{role}: no launch refused", not errors[role], errors[role])
    check("held in the ratio of the weights (3 within 10 %)", 2.7 <= held_ratio <= 3.3, held_ratio)
    check("taken from offers in the ratio of the weights (3 within 10 %)", 2.7 <= offered_ratio <= 3.3, offered_ratio)
    for child in children:
        check("a framework process ended cleanly", child.exitcode == 0, child.exitcode)

    api("/weights", "PUT", [{"role": "low", "weight": 1.0}, {"role": "high", "weight": 1.0}])
    print("weighted shares: ok")


if __name__ == "__main__":
    main()
