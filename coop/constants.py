"""What several modules share: the defaults behind `coop start`'s flags, fixed names (the Ray
namespace, the header, the prompt markers), limits on what is stored, and the planner's and
the board's tuning. A constant only one module uses lives in that module, with its docstring
(`RETRY_MAX` in planner/loop.py, `CLIENT_TIMEOUT` in llm.py…), as rq keeps its own."""

NAMESPACE = "coop"
"""Ray namespace holding every coop actor."""

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Keeps a Ray cluster that coop starts itself bound to 127.0.0.1."""

SECRET_ENV = ("OPENAI_API_KEY", "WEAVIATE_API_KEY")
"""Secrets coop reads from the environment: scrubbed from every line it writes."""
FORWARDED_ENV = (
    *SECRET_ENV,
    "OPENAI_BASE_URL",
    "WEAVIATE_URL",
    "WEAVIATE_GRPC_HOST",
    "WEAVIATE_GRPC_PORT",
    "TIKTOKEN_CACHE_DIR",
)
"""What a `coop` process hands the worker actors it starts: they run in processes Ray
started, whose environment is the node's, not the user's shell."""

INSTANCE_HEADER = "X-Coop-Instance"
"""Sent with every model request so a server's logs can tell coop instances apart."""

DEFAULT_INITIAL_TASK = "Develop a task list"
"""BabyAGI's first task: the seed the planner's first creation call grows from."""
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
OFFLINE_MODEL = "coop-simulated"
"""The simulated model's name, in settings, usage and the price table (free)."""

MEMORY_CHOICES = ("cluster", "weaviate", "weaviate-embedded")
"""`--memory`: coop's in-cluster store, a Weaviate server, or embedded Weaviate."""
DEFAULT_COLLECTION = "CoopResult"
"""The Weaviate collection every objective shares, one tenant each."""
WEAVIATE_HTTP_PORT = 8080
WEAVIATE_GRPC_PORT = 50051
"""Weaviate's own defaults: a URL without a port means these."""
WEAVIATE_EMBEDDED_PORTS = (8079, 50050)
"""The client's defaults for embedded Weaviate (HTTP, gRPC), on 127.0.0.1."""

DEFAULT_MAX_TASKS = 25
"""A safe finite default: no run is unbounded unless a user asks for more."""
DEFAULT_WORKERS = 1
"""Worker actors `coop start` runs beside the planner: one, with `DEFAULT_LOCAL_CONCURRENCY`
tasks in flight. Two tasks at once in one process rather than in two: a worker's process costs
about 1.3 s of CPU to start (Ray's worker, coop and the model's client to load) and ~150 MB,
and its tasks wait on the model, not on the CPU."""
DEFAULT_LOCAL_CONCURRENCY = 2
"""Tasks in flight per worker of `coop start`."""
DEFAULT_CONCURRENCY = 1
"""Tasks in flight per worker of `coop join`: one at a time unless asked."""
DEFAULT_LEASE_TTL = 30.0
"""Seconds a silent worker keeps a task; heartbeats renew it every third of that."""
DEFAULT_MAX_ATTEMPTS = 3
"""Attempts before a task is dead-lettered."""
DEFAULT_RETRY_DELAY = 2.0
"""Seconds before a failed task's second attempt; doubles with every further attempt: a model
server that failed a call its client retried three times gets time to recover."""
DEFAULT_CONTEXT_K = 5
"""Results from memory given to each execution."""
DEFAULT_MAX_PROMPT_TOKENS = 3000
"""Token budget of one prompt, its answer included."""
DEFAULT_MAX_COMPLETION_TOKENS = 700
"""Most tokens one answer may take."""
DEFAULT_MAX_STEPS = 8
"""Model calls and tool calls one task may take before its attempt fails: a model looping on
tool calls is stopped, not paid for forever."""
DEFAULT_SCRATCH_MB = 64
"""MiB a `python` call may write (its /tmp and its /dev/shm, each a tmpfs): RAM, not the
node's disk, so several workers at once cannot fill the disk that holds the journal."""
DEFAULT_SYNTHESIS_RESERVE = 0.05
"""Share of the token and cost caps no task may use, kept for writing the answer at the end."""
DEFAULT_PLANNER_CALLS = 16
"""Most creation calls the planner has in flight at once. Demand sets how many it really makes:
a few workers need one; 32 tasks in flight at half a second each, with three tasks a call,
need about eleven."""
DEFAULT_MODEL_TIMEOUT = 120.0
"""Seconds the model client waits for one answer before it retries (three times)."""

DEFAULT_PLANNER_TTL = 15.0
"""Seconds a planner claim lives without a heartbeat: how long a standby waits for a silent
planner, and how long a planner rides out a board it cannot reach before it gives up."""
PLANNER_BATCH = 8
"""Most completions folded into one task-creation call."""
PLANNER_TASK_WINDOW = 30
"""Most pending task names shown to task creation, so that it does not repeat them."""
PRIORITIZE_WINDOW = 10
"""Prioritization reorders only the head of the list: what workers take next. Bounded, so
planning costs the same per task at 50 tasks as at 5,000."""
CHECK_EVERY = 10
"""Completions between two completion checks (one is also made whenever the list runs dry)."""
STALL_LIMIT = 3
"""Batches without progress before the planner replans from scratch."""
MAX_REPLANS = 2
"""Replans without progress before the objective stops as stalled."""
REPLAN_HISTORY = 200
"""Most completed tasks fetched for a fresh plan (the prompt keeps the newest that fit)."""
LOOP_BATCHES = 3
"""Batches in a row that only re-propose completed work before the objective stops as a loop."""
TASK_SIMILARITY = 0.92
"""Cosine similarity at which a proposed task counts as a near-duplicate of a known one."""
RESULT_SIMILARITY = 0.97
"""Cosine similarity at which a result brings no new information over an earlier one."""
POLL_MIN = 0.05
POLL_MAX = 0.5
"""Seconds between two looks at the board while there is nothing to do: from POLL_MIN,
doubling up to POLL_MAX. An idle worker or planner waits on the board's bell (board/bell.py)
that long at most: a ring ends the wait at once, and what rings nothing (a retry's delay
ending, a deadline) is seen within POLL_MAX."""
ACTOR_RESTARTS = 3
"""How often Ray restarts a crashed board or memory actor (each rebuilds from its files)."""
SHUTDOWN_GRACE = 30.0
"""Seconds a stopping worker waits for in-flight tasks before releasing them."""

MAX_OBJECTIVE_CHARS = 4000
"""An objective is sent with every prompt; longer text belongs in the initial task."""
MAX_TASK_CHARS = 500
"""A task's text is cut here: tasks are one line of work, and go into many prompts."""
MAX_RESULT_CHARS = 20000
"""A result is cut here on the board and in the journal."""

OFFLINE_EMBEDDING_DIM = 256
"""Dimensions of the simulated model's embeddings."""
RESULT_SNIPPET_CHARS = 600
"""Characters of a result quoted back into prompts as context."""

PROMPT_MARKERS = {
    "execution": "# coop execution agent",
    "creation": "# coop task creation agent",
    "prioritization": "# coop prioritization agent",
    "completion": "# coop completion check",
    "replan": "# coop replanning agent",
    "synthesis": "# coop synthesis agent",
}
"""First line of each agent prompt: lets the simulated model and the stand-in tell them apart."""
PRICES: dict[str, tuple[float, float]] = {  # see the comment below
    # USD per million tokens (input, output): OpenAI's list prices when this table was written.
    # Override or extend with COOP_PRICES='{"model": [input, output]}'.
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "coop-simulated": (0.0, 0.0),
}
SIMULATED_LABEL = "offline simulated model (no real LLM)"
"""How the simulated model is named in banners, status and results: never taken for real."""

STATE_DIR_ENV = "COOP_STATE_DIR"
"""Where coop keeps its journals, memory and reports (default ~/.coop); read also by the
sandbox launcher, which imports nothing but the standard library, dotenv and pyseccomp."""
