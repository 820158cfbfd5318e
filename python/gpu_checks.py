"""Everything the project measures on a GPU, in one command with a time budget.

GPU time is scarce (a lent machine, a queue slot), so the checks run in order of what they decide,
each with its own deadline, and every result is written as it arrives:

    build        the extension with its CUDA kernels, in place (setup.py build_ext --inplace; objects are kept,
                 so a warm checkout rebuilds only what changed)
    tests        the CUDA test cases (pytest -m cuda) and the trainer's speed options
    graph        the captured update (--cuda_graph): the capture self-check of drq, svea, ac and cg2a at the
                 paper preset, their update time as graphs and eagerly, and end-to-end agent steps/s of drq
                 and cg2a with the graph on and off (cg2a_ext.rl.bench.graph)
    ops          the op table: host read-backs and kernel-launching ops per two eager updates (drq, svea,
                 ac, cg2a; paper preset, split)
    bench-ops    aggregate on CUDA: us per call at small P, launches per call, bandwidth at P = 1e7;
                 per_group_grads' methods on the DMC-GB critic against one backward
    bench-agent  the paper preset's critic update of ac and cg2a per per_group_grads method, the values
                 an update reads back (none expected) and its ops, the update breakdown and end-to-end
                 agent steps/s (drq, cg2a, ac)
    baselines    soda, sgqn and smg at the paper preset (agent steps/s)
    learning     drq and cg2a on cartpole_balance, paper network, action repeat 8, --cuda_graph on, side by
                 side on one GPU (also the two-runs-per-GPU figure); their evaluations on train (not in the
                 default list: `--stages learning`, 10 minutes alone)
    learning-baselines
                 soda, sgqn and smg on cartpole_balance, cpu preset network, 10k agent steps, side by
                 side (RESULTS.md's baselines check; not in the default list)
    profile      where one aggregate call's and one update's time goes (cg2a_ext.rl.bench.profile): host
                 time, kernel time, launches and synchronisations per call (not in the default list)
    sanitizer    compute-sanitizer memcheck and racecheck over the ops' CUDA cases against the
                 float64 reference (after any kernel change; not in the default list)

    python python/gpu_checks.py                         # = run --out gpu_results: the default stages, 9 minutes
    python python/gpu_checks.py run --out gpu_results --stages learning --budget 580    # the learning check
    python python/gpu_checks.py run --out gpu_results --stages tests bench-ops bench-agent baselines
    python python/gpu_checks.py run --out /tmp/gpu --archive $OUT    # then pack what comes back
    python python/gpu_checks.py prepare --python 3.12                     # on a machine with pip

A machine image that lacks the Python packages the trainer imports (tyro and its dependencies,
tqdm, Pillow) gets them from ``prepare``, run beforehand where pip can download: it writes pure
wheels and the image's binary ones into ``.device/extra.tgz`` (ignored by git), which ``run`` unpacks
and puts on the path after the image's own packages. Each stage writes ``<out>/<stage>.log``; ``<out>/summary.json`` lists the stages with
their exit status and seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ROOT / ".device" / "extra"
EXTRA_ARCHIVE = ROOT / ".device" / "extra.tgz"     # what travels (the carry limit counts bytes)
EXTRA_SITE = Path("/tmp/cg2a-extra-site")         # where `run` unpacks it
EXTRA_PACKAGES = ("tyro", "tqdm", "pillow")
STAGES = ("build", "tests", "graph", "ops", "bench-ops", "bench-agent", "baselines", "learning", "learning-baselines",
          "profile", "sanitizer")
# what `python python/gpu_checks.py` runs: fits 10 minutes on a cold machine, the build included
DEFAULT_STAGES = ("build", "tests", "graph", "ops")
DEFAULT_BUDGET = 540.0
LEARNING = ("--task", "cartpole_balance", "--preset", "paper", "--action_repeat", "8", "--train_steps", "12000",
            "--eval_freq", "2000", "--eval_episodes", "5", "--eval_modes", "train", "--cuda_graph", "on")
# the baselines' learning check of RESULTS.md (the cpu preset's network, as on the CPU machine)
LEARNING_BASELINES = ("--task", "cartpole_balance", "--preset", "cpu", "--action_repeat", "8", "--train_steps",
                      "10000", "--seed_steps", "500", "--eval_freq", "1000", "--eval_episodes", "3",
                      "--checkpoint_freq", "1000", "--log_freq", "250", "--eval_modes", "train")


def prepare(python_version: str) -> int:
    """Download the packages the GPU image lacks, for its Python, into the archive .device/extra.tgz."""
    wheels = EXTRA / "wheels"
    site = EXTRA / "site"
    shutil.rmtree(EXTRA, ignore_errors=True)
    wheels.mkdir(parents=True)
    tag = python_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", "--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "--platform", "any", "-d", str(wheels), *EXTRA_PACKAGES]
    if subprocess.run(cmd).returncode != 0:
        print("gpu_checks.py prepare: pip download failed (is an index reachable?)", file=sys.stderr)
        return 1
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    with tarfile.open(EXTRA_ARCHIVE, "w:gz") as tar:
        tar.add(site, arcname=".")
    shutil.rmtree(EXTRA)
    print(f"wrote {EXTRA_ARCHIVE} ({EXTRA_ARCHIVE.stat().st_size / 1e6:.1f} MB): {', '.join(EXTRA_PACKAGES)} "
          f"and their dependencies for Python {python_version}")
    return 0


def environment() -> dict:
    env = dict(os.environ)
    if EXTRA_ARCHIVE.is_file() and not EXTRA_SITE.is_dir():
        # unpacked beside it and renamed into place: a second gpu_checks started at the same time
        # never sees a half-unpacked folder
        partial = EXTRA_SITE.with_name(f"{EXTRA_SITE.name}.{os.getpid()}.tmp")
        with tarfile.open(EXTRA_ARCHIVE) as tar:
            tar.extractall(partial, filter="data")
        try:
            partial.rename(EXTRA_SITE)
        except OSError:   # the other one was first
            shutil.rmtree(partial, ignore_errors=True)
    # after the image's own packages: the archive only fills in what is missing
    paths = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths += [str(EXTRA_SITE)] if EXTRA_SITE.is_dir() else []
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def has_module(name: str, env: dict) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is None)"
    return subprocess.run([sys.executable, "-c", probe], env=env).returncode == 0


def run_stage(name: str, commands: list[list[str]], out: Path, env: dict, deadline: float) -> dict:
    """Runs the commands side by side (one log each), stopping them at the deadline."""
    start = time.time()
    procs = []
    for i, cmd in enumerate(commands):
        log = open(out / (f"{name}.log" if len(commands) == 1 else f"{name}-{i}.log"), "w")
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    status: list = [None] * len(procs)
    for i, (proc, _) in enumerate(procs):
        try:
            status[i] = proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            break
    for i, (proc, log) in enumerate(procs):
        if status[i] is None and proc.poll() is None:
            proc.send_signal(2)  # SIGINT: a training run checkpoints and says how to resume
    for i, (proc, log) in enumerate(procs):
        if status[i] is None:
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            status[i] = code if code == 0 and time.time() < deadline else f"stopped at the deadline (exit {code})"
        log.close()
    return {"stage": name, "status": status, "seconds": round(time.time() - start, 1)}


def stage_commands(name: str, out: Path, env: dict) -> list[list[str]]:
    py = sys.executable
    if name == "build":
        return [[py, "setup.py", "build_ext", "--inplace"]]
    if name == "graph":
        return [[py, "-m", "cg2a_ext.rl.bench.graph", "--preset", "paper", "--algorithms", "drq", "svea", "ac", "cg2a",
                 "--speed", "drq", "cg2a"]]
    if name == "ops":
        return [[py, "-m", "cg2a_ext.rl.bench.host_reads", "--preset", "paper", "--device", "cuda", "--batch_size",
                 "4", "--grad_method", "split", "--algorithms", "drq", "svea", "ac", "cg2a"]]
    if name == "tests":
        # every CUDA case (marked `cuda`), and the trainer's speed options and per-loss gradients whole
        return [[py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda", "tests"],
                [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "not cuda",
                 "tests/test_speed_options.py", "tests/test_ops_per_group_grads.py"]]
    if name == "profile":
        return [[py, "-m", "cg2a_ext.rl.bench.profile", "--device", "cuda", "--presets", "paper"]]
    if name == "bench-ops":
        return [[py, "-m", "cg2a_ext.bench.ops", "--device", "cuda"],
                [py, "-m", "cg2a_ext.rl.bench.per_loss_grads", "--device", "cuda"]]
    if name == "bench-agent":
        return [[py, "-m", "cg2a_ext.rl.bench.agent", "--critic-methods", "--presets", "paper"],
                [py, "-m", "cg2a_ext.rl.bench.host_reads", "--preset", "paper", "--device", "cuda",
                 "--algorithms", "drq", "cg2a"],
                [py, "-m", "cg2a_ext.rl.bench.agent", "--speed", "--presets", "paper"]]
    if name == "baselines":
        return [[py, "-m", "cg2a_ext.rl.bench.baselines", "--presets", "paper"]]
    if name == "sanitizer":
        cases = [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_ops.py", "-k", "cuda"]
        return [["compute-sanitizer", "--tool", tool, "--error-exitcode", "9", *cases]
                for tool in ("memcheck", "racecheck")]
    if name in ("learning", "learning-baselines"):
        tb = [] if has_module("tensorboard", env) else ["--no_tensorboard"]
        options, algorithms = ((LEARNING, ("drq", "cg2a")) if name == "learning"
                               else (LEARNING_BASELINES, ("soda", "sgqn", "smg")))
        return [[py, "python/train.py", "--algorithm", algorithm, "--seed", "0", *options, *tb,
                 "--run_dir", str(out / "runs" / f"{algorithm}-seed0")] for algorithm in algorithms]
    raise ValueError(name)


def compilers(library: Path) -> list[str]:
    """The compilers named in a shared library's .comment section (``GCC: (...) 13.3.1``)."""
    data = library.read_bytes()
    return sorted({m.decode(errors="replace") for m in re.findall(rb"GCC: \([^)]*\) [0-9][0-9.]*[^\x00]*", data)})


PROBE = ("from cg2a_ext._extension import op_error_message\n"
         "for device in ('cpu', 'cuda'):\n"
         "    print(device, 'error reached Python:', op_error_message(device), flush=True)\n")


def preflight(out: Path, env: dict) -> bool:
    """Which compilers built the extension and torch, and whether an op's error reaches Python (a
    C++ runtime that differs from torch's can turn every thrown error into a crash: then every
    stage's failures would mislead)."""
    import torch  # noqa: F401  (the image's)

    lines = []
    ext = sorted((ROOT / "cg2a_ext").glob("_C*.so"))
    c10 = Path(torch.__file__).parent / "lib" / "libc10.so"
    for name, lib in (("cg2a_ext", ext[0] if ext else None), ("torch (libc10)", c10)):
        lines.append(f"{name}: {', '.join(compilers(lib)) if lib and lib.is_file() else 'not found'}")
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True)
    ok = result.returncode == 0 and result.stdout.count("error reached Python") == 2
    lines.append(f"op errors reach Python on cpu and cuda: {ok} (exit {result.returncode})")
    if not ok:
        lines.append("An error thrown inside cg2a_ext crashed or escaped: rebuild with the compiler torch was "
                     "built with (e.g. CC=/usr/bin/gcc CXX=/usr/bin/g++ before `source .device/setup.sh`, "
                     "after removing cg2a_ext/_C*.so and build/).")
        lines.append(result.stdout[-2000:] + result.stderr[-2000:])
        debugger = shutil.which("gdb") or shutil.which("cuda-gdb")   # the GPU image has cuda-gdb only
        if debugger and result.returncode < 0:   # killed by a signal: where?
            trace = subprocess.run([debugger, "-q", "-batch", "-ex", "run", "-ex", "bt 40", "--args",
                                    sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                                   text=True, timeout=300)
            frames = [line for line in trace.stdout.splitlines() if line.startswith("#") or "signal" in line]
            lines.append(f"backtrace ({debugger}):\n" + "\n".join(frames[-60:]))
    (out / "preflight.log").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:4]), flush=True)
    return ok


def only_algorithms(commands: list[list[str]], algorithms: list[str] | None) -> list[list[str]]:
    """The learning runs of the named algorithms (all when None); other stages' commands unchanged."""
    if not algorithms:
        return commands
    return [c for c in commands if "--algorithm" not in c or c[c.index("--algorithm") + 1] in algorithms]


def cuda_missing() -> str | None:
    """Why this machine cannot run the checks (no CUDA build of torch, or no device), or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    return None


def run(out: Path, stages: list[str], budget: float, algorithms: list[str] | None = None) -> int:
    why = cuda_missing()
    if why:
        print(f"gpu_checks.py: {why}; these checks need a CUDA GPU (stages: {' '.join(stages)})", file=sys.stderr)
        return 4
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    if "build" in stages and "TORCH_CUDA_ARCH_LIST" not in env:
        import torch

        # this machine's architecture only: about half the compile time of the default two (the build stage
        # has to fit the 10 minutes of a cold machine with the checks)
        env["TORCH_CUDA_ARCH_LIST"] = "{}.{}".format(*torch.cuda.get_device_capability())
    missing = [m for m in ("torch", "dm_control", "tyro", "numpy") if not has_module(m, env)]
    if missing:
        print(f"gpu_checks.py: missing Python packages: {', '.join(missing)} (see `prepare`)", file=sys.stderr)
        return 2
    if not preflight(out, env):
        print("gpu_checks.py: stopping before the stages: op errors do not reach Python (preflight.log)",
              file=sys.stderr)
        return 3
    end = time.time() + budget
    summary = []
    # the budget is shared out in proportion to each stage's usual length; unused time carries over
    weight = {"build": 4, "tests": 2, "graph": 3, "ops": 1, "bench-ops": 1, "bench-agent": 2, "baselines": 1,
              "learning": 4, "learning-baselines": 4, "profile": 1, "sanitizer": 3}
    for i, name in enumerate(stages):
        rest = sum(weight[s] for s in stages[i:])
        deadline = time.time() + (end - time.time()) * weight[name] / rest
        print(f"[{time.strftime('%H:%M:%S')}] {name}: until {time.strftime('%H:%M:%S', time.localtime(deadline))}",
              flush=True)
        commands = only_algorithms(stage_commands(name, out, env), algorithms)
        if not commands:
            print(f"    {name}: no run left after --only {' '.join(algorithms)}", flush=True)
            continue
        summary.append(run_stage(name, commands, out, env, deadline))
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"    {summary[-1]['status']} in {summary[-1]['seconds']} s", flush=True)
    return 0


def archive(out: Path, dest: Path) -> list[Path]:
    """What a lent machine may send back (a few files of limited size): ``gpu-logs.tgz`` with every
    log, summary and run file except checkpoints and replay buffers, and ``run-<name>.tgz`` per run
    with its newest checkpoint (for the zero-shot evaluation on a machine with the video data)."""
    dest.mkdir(parents=True, exist_ok=True)
    runs = sorted(p for p in (out / "runs").glob("*") if p.is_dir()) if (out / "runs").is_dir() else []
    heavy = lambda name: name.endswith((".pt", ".npz"))  # noqa: E731
    written = [dest / "gpu-logs.tgz"]
    with tarfile.open(written[0], "w:gz") as tar:
        tar.add(out, arcname=out.name, filter=lambda info: None if heavy(info.name) else info)
    for run_dir in runs:
        checkpoints = sorted(run_dir.glob("checkpoints/step_*.pt"))
        if checkpoints:
            written.append(dest / f"run-{run_dir.name}.tgz")
            with tarfile.open(written[-1], "w:gz") as tar:
                tar.add(checkpoints[-1], arcname=f"{run_dir.name}/checkpoints/{checkpoints[-1].name}")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the checks")
    r.add_argument("--out", type=Path, required=True, help="folder for the logs, the summary and the runs")
    r.add_argument("--stages", nargs="+", choices=STAGES, default=list(DEFAULT_STAGES))
    r.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for all the stages together")
    r.add_argument("--only", nargs="+", default=None, metavar="ALGORITHM",
                   help="the learning stages run only these algorithms (e.g. --only cg2a: one run alone is faster)")
    r.add_argument("--archive", type=Path, default=None,
                   help="afterwards, pack the results into this folder as a few .tgz files (gpu-logs.tgz, and "
                        "run-NAME.tgz with each run's newest checkpoint): what a lent machine can send back")
    pr = sub.add_parser("prepare", help="download the packages a GPU image lacks into .device/extra")
    pr.add_argument("--python", default="3.12", help="the GPU image's Python version")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv or ["run", "--out", "gpu_results"])     # bare: the default stages
    if args.command == "prepare":
        return prepare(args.python)
    if args.budget <= 0:
        p.error(f"--budget must be positive, got {args.budget}")
    status = run(args.out, args.stages, args.budget, args.only)
    if args.archive is not None and args.out.is_dir():
        for path in archive(args.out, args.archive):
            print(f"packed {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
