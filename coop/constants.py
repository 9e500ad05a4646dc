"""Every default and fixed name in one place, so a reader can tune coop from one file."""

NAMESPACE = "coop"
"""Ray namespace holding every coop actor."""

ENV_PREFIX = "COOP_"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Keeps a Ray cluster that coop starts itself bound to 127.0.0.1."""

INSTANCE_HEADER = "X-Coop-Instance"
"""Sent with every model request so a server's logs can tell coop instances apart."""

DEFAULT_INITIAL_TASK = "Develop a task list"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
OFFLINE_MODEL = "coop-simulated"

DEFAULT_MAX_TASKS = 25
"""A safe finite default: no run is unbounded unless a user asks for more."""
DEFAULT_WORKERS = 2
DEFAULT_CONCURRENCY = 1
DEFAULT_LEASE_TTL = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_CONTEXT_K = 5
DEFAULT_MAX_PROMPT_TOKENS = 3000
DEFAULT_MAX_COMPLETION_TOKENS = 700

PLANNER_TTL = 15.0
"""Seconds a planner claim lives without a heartbeat."""
PLANNER_BATCH = 8
"""Most completions folded into one task-creation call."""
PLANNER_TASK_WINDOW = 30
"""Most pending task names shown to creation and prioritization."""
POLL_MIN = 0.05
POLL_MAX = 0.5
ACTOR_RESTARTS = 3
"""How often Ray restarts a crashed board or memory actor (each rebuilds from its files)."""
RETRY_DELAY = 2.0
"""Seconds before a failed task's second attempt; doubles with every further attempt."""
SHUTDOWN_GRACE = 30.0
"""Seconds a stopping worker waits for in-flight tasks before releasing them."""

MAX_OBJECTIVE_CHARS = 4000
"""An objective is sent with every prompt; longer text belongs in the initial task."""
MAX_TASK_CHARS = 500
MAX_RESULT_CHARS = 20000

OFFLINE_EMBEDDING_DIM = 256
RESULT_SNIPPET_CHARS = 600
"""Characters of a result quoted back into prompts as context."""

PROMPT_MARKERS = {
    "execution": "# coop execution agent",
    "creation": "# coop task creation agent",
    "prioritization": "# coop prioritization agent",
}
"""First line of each agent prompt: lets the simulated model and the stand-in tell them apart."""
SIMULATED_LABEL = "offline simulated model (no real LLM)"
