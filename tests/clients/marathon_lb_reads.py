"""What marathon-lb reads, read as it reads it (marathon-lb is not on PyPI, so this follows
its source: `get_apps` and the event loop of marathon_lb.py, per ../shared/COMPAT.md §2):
`GET /v2/apps?embed=apps.tasks` indexed directly (a missing key is a KeyError there), the
service ports it builds frontends from, the tasks it routes to, and the three event types
it re-reads on.

Usage: marathon_lb_reads.py <master-url> <token>. Exits non-zero, naming what it could not
read, on the first failure.
"""
import json
import sys
import threading
import time
import urllib.request
from checks import check  # noqa: E402

URL, TOKEN = sys.argv[1], sys.argv[2]
EVENT_TYPES = ["api_post_event", "health_status_changed_event", "status_update_event"]


def request(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Authorization", f"token={TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read() or b"null")


# The event stream first, filtered as marathon-lb filters it: every event it gets must be of
# the three types, and a deploy must bring each of them.
seen = []
stream_error = []


def follow_events():
    query = "&".join(f"event_type={t}" for t in EVENT_TYPES)
    req = urllib.request.Request(f"{URL}/v2/events?{query}")
    req.add_header("Authorization", f"token={TOKEN}")
    req.add_header("Accept", "text/event-stream")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data: "):
                    event = json.loads(line[len("data: "):])
                    seen.append(event["eventType"])
    except Exception as error:  # the stream ends when the test does
        stream_error.append(error)


threading.Thread(target=follow_events, daemon=True).start()
time.sleep(1)

app = {
    "id": "/lb/web",
    "cmd": "exec python3 -m http.server $PORT0 --bind 127.0.0.1",
    "cpus": 0.1,
    "mem": 16,
    "instances": 2,
    "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "web.example.com"},
    "portDefinitions": [{"port": 0, "name": "http"}, {"port": 10555}],
    # Quick checks for the test; the other fields keep Marathon's defaults.
    "healthChecks": [{"protocol": "TCP", "portIndex": 0, "intervalSeconds": 2,
                      "timeoutSeconds": 1, "delaySeconds": 0}],
}
request("POST", "/v2/apps", app)
deadline = time.time() + 60
while True:
    apps = request("GET", "/v2/apps?embed=apps.tasks")["apps"]
    web = [a for a in apps if a["id"] == "/lb/web"]
    healthy = web and [t for t in web[0]["tasks"]
                       if t["state"] == "TASK_RUNNING" and t["healthCheckResults"]
                       and t["healthCheckResults"][0]["alive"]]
    if healthy and len(healthy) == 2:
        break
    check("two healthy tasks", time.time() < deadline, json.dumps(web))
    time.sleep(0.5)

for a in apps:
    # Indexed directly by marathon-lb.
    labels, tasks, checks = a["labels"], a["tasks"], a["healthChecks"]
    check("labels", isinstance(labels, dict), a)
    check("tasks", isinstance(tasks, list), a)
    a["versionInfo"]["lastScalingAt"]
    a["deployments"]
    for hc in checks:
        for key in ["protocol", "gracePeriodSeconds", "intervalSeconds", "timeoutSeconds",
                    "maxConsecutiveFailures"]:
            check(f"healthChecks[].{key}", key in hc, hc)
        check("healthChecks[] port", "portIndex" in hc or "port" in hc, hc)
    for task in tasks:
        for key in ["id", "host", "state", "ports", "appId"]:
            check(f"task {key}", key in task, task)

web = [a for a in apps if a["id"] == "/lb/web"][0]
hc = web["healthChecks"][0]
check("Marathon's health-check defaults",
      (hc["gracePeriodSeconds"], hc["maxConsecutiveFailures"]) == (300, 3), hc)
# Service ports: from portDefinitions[].port, each set (0 was given one from Marathon's
# 10000-20000), an explicit one kept; the tasks' own host ports are another matter.
service_ports = [d["port"] for d in web["portDefinitions"]]
check("service ports", service_ports[1] == 10555 and 10000 <= service_ports[0] <= 20000
      and service_ports[0] != 10555, service_ports)
for task in web["tasks"]:
    check("host ports", len(task["ports"]) == 2 and all(p > 0 for p in task["ports"]), task)
check("labels pass through", web["labels"]["HAPROXY_0_VHOST"] == "web.example.com", web)

# A second app gets service ports of its own.
request("POST", "/v2/apps", dict(app, id="/lb/api", portDefinitions=[{"port": 0}], instances=0,
                                 healthChecks=[]))
api = request("GET", "/v2/apps/lb/api")["app"]
check("distinct service ports", api["portDefinitions"][0]["port"] not in service_ports, api)

deadline = time.time() + 20
while not all(t in seen for t in EVENT_TYPES):
    check("the three event types", time.time() < deadline, (seen, stream_error))
    time.sleep(0.2)
check("only the types asked for", set(seen) <= set(EVENT_TYPES), seen)
print("marathon-lb reads: all present")
