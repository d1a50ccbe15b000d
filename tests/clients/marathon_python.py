"""marathon-python (PyPI `marathon`) against a dcos-rs master: the calls whose answers its
strict models parse today. Usage: marathon_python.py <master-url> <token>: the token goes as
DC/OS's `Authorization: token=<token>` (marathon-python's `auth_token`). Exits non-zero,
naming the call, on the first failure.

Not covered yet: what the services issue adds (groups, versions, queue, events, health checks,
embed parameters, kill_tasks).
"""
import sys
import time

import marathon
from marathon.models import MarathonApp

client = marathon.MarathonClient(sys.argv[1], auth_token=sys.argv[2])


def check(name, condition, detail):
    if not condition:
        sys.exit(f"{name}: {detail}")


info = client.get_info()
check("get_info", info.name == "dcos-rs" and info.elected is True, vars(info))

created = client.create_app("/py/web", MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=1))
check("create_app", created.id == "/py/web" and created.instances == 1, vars(created))
check("create_app", len(created.deployments) == 1, created.deployments)
check("create_app version", created.version.endswith("Z") and "." in created.version, created.version)

deadline = time.time() + 30
while True:
    app = client.get_app("/py/web")
    if app.tasks_running == 1 and not app.deployments:
        break
    check("get_app", time.time() < deadline, f"not running after 30 s: {vars(app)}")
    time.sleep(0.2)

tasks = client.list_tasks()
check("list_tasks", [t.app_id for t in tasks] == ["/py/web"], [vars(t) for t in tasks])
check("list_tasks state", tasks[0].state == "TASK_RUNNING" and tasks[0].started_at is not None, vars(tasks[0]))
check("list_tasks(app)", len(client.list_tasks(app_id="/py/web")) == 1, "tasks of /py/web")

apps = client.list_apps()
check("list_apps", [a.id for a in apps] == ["/py/web"], [a.id for a in apps])

scaled = client.scale_app("/py/web", 2)
check("scale_app", "deploymentId" in scaled and "version" in scaled, scaled)
check("get_app after scale", client.get_app("/py/web").instances == 2, "instances")

check("list_deployments", isinstance(client.list_deployments(), list), "not a list")

deleted = client.delete_app("/py/web")
check("delete_app", "deploymentId" in deleted, deleted)
try:
    client.get_app("/py/web")
    sys.exit("get_app after delete: the app is still there")
except marathon.exceptions.NotFoundError:
    pass
print("marathon-python: every call parsed")
