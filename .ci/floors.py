"""Print ``name==lower_bound`` for every direct dependency of pyproject.toml (``make test-oldest``).

uv's ``--resolution lowest-direct`` may still pick a newer release when it backtracks; these
constraints make the oldest run use exactly the lower bounds that pyproject.toml declares.
"""

import re
import sys
import tomllib

project = tomllib.load(open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"]["dev"]
for dep in deps:
    m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", dep)
    if m and m.group(1) != "torch":  # torch: the CPU build on this disk (constraints.txt)
        print(f"{m.group(1)}=={m.group(2)}")
