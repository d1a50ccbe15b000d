"""Mesos's operator event stream (`POST /api/v1 {"type": "SUBSCRIBE"}`) read as a Mesos
operator tool reads it: a chunked answer of RecordIO records (`<length>\\n<JSON>`), on a
thread, every event kept. (pymesos's own operator driver sends no credentials, so it
cannot be pointed at a master that requires them.)
"""
import http.client
import json
import ssl
import threading
import urllib.parse


class OperatorEvents:
    def __init__(self, url, token, ca=None):
        """`ca`: the cluster CA's certificate file, for an https `url`."""
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme == "https":
            context = ssl.create_default_context(cafile=ca)
            self.connection = http.client.HTTPSConnection(parsed.hostname, parsed.port, timeout=60,
                                                          context=context)
        else:
            self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        self.connection.request("POST", "/api/v1", body=json.dumps({"type": "SUBSCRIBE"}),
                                headers={"Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json",
                                         "Accept": "application/json"})
        self.answer = self.connection.getresponse()
        if self.answer.status != 200:
            raise RuntimeError(f"SUBSCRIBE answered {self.answer.status}: {self.answer.read()!r}")
        self.content_type = self.answer.getheader("Content-Type")
        self.lock = threading.Lock()
        self.events = []
        self.ended = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                length = b""
                while not length.endswith(b"\n"):
                    byte = self.answer.read(1)
                    if not byte:
                        raise EOFError("the stream ended")
                    length += byte
                record = self.answer.read(int(length))
                with self.lock:
                    self.events.append(json.loads(record))
        except Exception as error:  # the stream's end, seen by the checks
            self.ended = error

    def of_type(self, kind):
        with self.lock:
            return [e for e in self.events if e["type"] == kind]

    def task_states(self, task_id):
        """The states TASK_ADDED and TASK_UPDATED gave `task_id`, in order."""
        with self.lock:
            states = []
            for event in self.events:
                if event["type"] == "TASK_ADDED" and event["task_added"]["task"]["task_id"]["value"] == task_id:
                    states.append(event["task_added"]["task"]["state"])
                if event["type"] == "TASK_UPDATED" and event["task_updated"]["status"]["task_id"]["value"] == task_id:
                    states.append(event["task_updated"]["state"])
            return states

    def close(self):
        self.connection.close()
