"""Work on a host, as data: the plan chooses steps (plan.py), one compiler turns steps into the
shell script a host runs (compiler.py, with every bit of quoting), the scripts themselves are
real files (scripts/*.sh, checked by shellcheck), and RemoteExit is shared by both sides."""
