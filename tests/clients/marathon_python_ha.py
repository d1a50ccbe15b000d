"""marathon-python (PyPI `marathon`) against a cluster of masters, pointed at a follower as
a user with several masters in their list would be: reads are served there, writes are
passed on to the leader with the user's token (a redirect would lose it: `requests` drops
the `Authorization` header when it follows a redirect to another host).

Usage: marathon_python_ha.py <master-url,...> <token> <ca.crt>: the URLs in the order the
client tries them (a follower first), the token as DC/OS's `Authorization: token=<token>`,
the cluster CA to verify the masters' certificates. Exits non-zero, naming the call, on the
first failure.
"""
import collections
import collections.abc
import sys
import time

import marathon
from marathon.models import MarathonApp

# marathon-python 0.13 encodes nested objects with `collections.Iterable`, gone since Python
# 3.10 (a client bug, not the server's).
collections.Iterable = collections.abc.Iterable

URLS, TOKEN, CA = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
client = marathon.MarathonClient(URLS, auth_token=TOKEN, verify=CA, timeout=30)


def check(name, ok, detail=""):
    if not ok:
        sys.exit(f"FAILED {name}: {detail}")
    print(f"ok {name}")


def wait(name, condition, seconds=60):
    deadline = time.time() + seconds
    while True:
        result = condition()
        if result:
            return result
        check(name, time.time() < deadline, f"not true after {seconds} s")
        time.sleep(0.2)


def running(app_id, instances):
    def done():
        app = client.get_app(app_id)
        return app if app.tasks_running == instances and not app.deployments else None
    return done


info = client.get_info()
check("get_info from a follower", info.leader and info.elected is False, vars(info))
created = client.create_app("/ha/web", MarathonApp(cmd="sleep 100000", cpus=0.1, mem=16, instances=2))
check("create_app through a follower", created.id == "/ha/web", vars(created))
wait("2 running, seen on the follower", running("/ha/web", 2))
scaled = client.scale_app("/ha/web", instances=1)
check("scale_app through a follower", "deploymentId" in scaled, scaled)
wait("1 running", running("/ha/web", 1))
apps = client.list_apps(app_id="/ha")
check("list_apps", [a.id for a in apps] == ["/ha/web"], [a.id for a in apps])
deleted = client.delete_app("/ha/web")
check("delete_app through a follower", "deploymentId" in deleted, deleted)
wait("removed", lambda: not client.list_apps(app_id="/ha"))
print("all checks passed")
