"""Run infrastructure: a validated spec in, a run directory and an event stream out.

spec.py         validation against the committed JSON Schema, defaults filled in
runner.py       run_spec: run directory, events, result.json, exit codes; TASK_MODULES
launch.py       several local processes through `accelerate launch`
worker.py       `python -m oplora worker`: runs served over stdin/stdout (sweeps)
quick.py        the pythonia entry points of the SDK's quick lane (JSON envelopes; echo, sleep, pid for tests)
events.py rundir.py environment.py   NDJSON events, atomic writes, device and versions
"""
