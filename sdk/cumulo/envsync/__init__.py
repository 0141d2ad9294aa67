"""What the workers run: the notebook's environment, captured as a lock that hosts install with uv.

Coiled's package sync is the model: the cluster gets the client's packages at
the client's versions, local and editable ones included, without a Dockerfile.
:func:`capture` reads this interpreter's distributions and keeps the top-level
ones (those nothing else requires) minus client-only tools (the notebook front
end, test runners, build tools: ``cumulo.env.exclude``), with everything they
require, pinned at the installed version. Distributions installed from a local
folder or file (editable ones, cumulo itself during development) cannot be
fetched by a host, so they are built into wheels here (:func:`build_wheels`)
and shipped over the provider's authenticated channel, never a public URL. Such
a wheel leaves out what git ignores (a ``.env``, keys) and is scanned for secrets
before it is sent (:mod:`.shipcheck`).

The lock's :attr:`Lock.digest` names the environment: a host keeps one venv per
digest and reuses it when the lock matches. :func:`install_script` is the shell
a host runs to build that venv, private to its user and removed again when its build
fails; it is transport-neutral (SSH runs it today). Resolving a lock here
(:func:`check_resolvable`) never builds a source distribution.
Nothing here holds secrets: index URLs with credentials stay in the host's own
uv configuration.
"""

from .install import install_script
from .lock import DEFAULT_EXCLUDE, RAPIDS, Local, Lock, capture, compact, for_gpu, from_requirements, lock_for
from .prepare import Prepared, prepare, recorded
from .resolve import check_resolvable, named_package, unreachable_index, without_credentials
from .wheels import build_wheels, client_platform, ship_wheels, uv_binary, uv_path

__all__ = ["DEFAULT_EXCLUDE", "RAPIDS", "Local", "Lock", "Prepared", "build_wheels", "capture", "check_resolvable",
           "client_platform", "compact", "for_gpu", "from_requirements", "install_script", "lock_for", "named_package",
           "prepare", "recorded", "ship_wheels", "unreachable_index", "uv_binary", "uv_path", "without_credentials"]
