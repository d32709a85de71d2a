"""Locust load on POST /query, the way the semantic-classification seed load-tested it, against mlapi.

Each user sends the seed's request shape (`{"sentence": ..., "labels": [...]}`): mostly the seed's own example
(a cache hit after the first), sometimes a sentence never sent before (a miss that runs the model). A 503 with
Retry-After is load shedding, reported under its own failure message ("503 shed"), apart from wrong answers.

    locust -f load/locustfile.py --host http://127.0.0.1:8000                       # web UI on :8089
    locust -f load/locustfile.py --host http://127.0.0.1:8000 --headless -u 10 -r 10 -t 1m \\
        --html load/results/locust.html --csv load/results/locust

Env: NEW_SHARE (share of requests with a new sentence, default 0.05), THINK_S (max seconds a user waits between
requests, default 1; 0 for flat out), PATH_PREFIX (e.g. /lab when the service runs under a prefix), API_KEY (sent
as X-API-Key; every stack requires one, and a server that refuses it, or asks for one, stops the run at its first
answer).
"""

from __future__ import annotations

import itertools
import logging
import os
import random

from locust import HttpUser, between, constant, task

SENTENCE = "feeling like a million bucks"
LABELS = ["happy", "sad", "rich"]
NEW_SHARE = float(os.environ.get("NEW_SHARE", "0.05"))
THINK_S = float(os.environ.get("THINK_S", "1"))
PREFIX = os.environ.get("PATH_PREFIX", "")
API_KEY = os.environ.get("API_KEY", "")
_ids = itertools.count()
_WORDS = ["movie", "great", "awful", "dinner", "river", "quiet", "bright", "friend", "budget", "season"]


def new_sentence() -> str:
    """A sentence no earlier request of this process sent, so no cache can answer it."""
    n = next(_ids)
    return f"request {n} " + " ".join(random.choices(_WORDS, k=6))


class QueryUser(HttpUser):
    """One client of /query; waits up to THINK_S seconds between requests."""

    wait_time = between(THINK_S / 2, THINK_S) if THINK_S > 0 else constant(0)

    def on_start(self) -> None:
        """Send the key with every request."""
        if API_KEY:
            self.client.headers["X-API-Key"] = API_KEY

    @task
    def query(self) -> None:
        """Rank the labels for a sentence; the answer must be one of them."""
        sentence = new_sentence() if random.random() < NEW_SHARE else SENTENCE
        with self.client.post(f"{PREFIX}/query", json={"sentence": sentence, "labels": LABELS}, name="/query",
                              catch_response=True) as response:
            if response.status_code in (401, 403):
                # Every later request would be refused too: end the run at once, saying why.
                fix = ("API_KEY is set but the server does not accept it" if API_KEY
                       else "the server requires an API key: set API_KEY (sent as X-API-Key)")
                response.failure(f"{response.status_code}: {fix}")
                logging.error("%s%s/query answered %s: %s", self.host, PREFIX, response.status_code, fix)
                self.environment.runner.quit()
            elif response.status_code == 503 and "Retry-After" in response.headers:
                response.failure("503 shed (queue full)")
            elif response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif response.json().get("label") not in LABELS:
                response.failure(f"unexpected body {response.text[:200]}")
            else:
                response.success()
