"""A container engine for the tests, and the local base images that stand in for the official
`python` and `postgres` images (no container registry is needed).

The engine is Docker: used as it is when `docker info` answers, otherwise `dockerd` is started
here (as root, in the background) and stopped again by `Engine.stop`. The base images are made
from Debian bookworm with `debootstrap` + `docker import`, trust the machine's local CA
certificates (so pip works behind a TLS-intercepting proxy), and are kept in the engine's image
store under a tag derived from their recipe: the first run takes about a minute, later ones find
them.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

RECIPES = Path(__file__).parent / "images"
LOCAL_CA = Path("/usr/local/share/ca-certificates")
LOCK = Path(tempfile.gettempdir()) / "todo-api-test-images.lock"
SBIN = ("/usr/sbin", "/sbin")
ROOT_FS = (
    "debootstrap --variant=minbase bookworm, without apt's caches"  # change with _import_debian
)


class EngineUnavailable(Exception):
    """No container engine can run here; the message says why and how to get one."""


def which(program: str) -> str | None:
    """`program`'s path on PATH or in the sbin directories (not on every user's PATH)."""
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN))


def run(
    *args: str, timeout: float = 600, check: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; raises CalledProcessError (with the output) on
    failure."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, args, result.stdout, result.stderr)
    return result


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`docker ARGS...` (see `run`)."""
    return run("docker", *args, **kwargs)


def answers() -> bool:
    """Whether the Docker daemon answers the CLI."""
    return run("docker", "info", timeout=30, check=False).returncode == 0


class Engine:
    """A running Docker daemon and the compose command that drives it (`docker compose` v2, or
    `docker-compose` 1.29, whichever is installed)."""

    def __init__(self, compose: list[str], daemon: subprocess.Popen | None):
        self.compose = compose
        self.daemon = daemon  # the dockerd started here, None if it was already running

    @classmethod
    def start(cls, log_dir: Path) -> "Engine":
        """The engine, starting `dockerd` if needed (its log in `log_dir`). Raises
        EngineUnavailable."""
        if not which("docker"):
            raise EngineUnavailable("the docker CLI is not installed (apt-get install docker.io)")
        compose = _compose_command()
        if answers():
            return cls(compose, None)
        dockerd = which("dockerd")
        if not dockerd:
            raise EngineUnavailable("no Docker daemon answers and dockerd is not installed")
        if os.geteuid() != 0:
            raise EngineUnavailable("no Docker daemon answers and only root may start dockerd here")
        log = log_dir / "dockerd.log"
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [dockerd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.poll() is None:
            if answers():
                return cls(compose, daemon)
            time.sleep(1)
        daemon.terminate()
        daemon.wait(30)
        tail = log.read_text(errors="replace")[-2000:]
        raise EngineUnavailable(f"dockerd did not start: {tail}")

    def stop(self) -> None:
        """Stop the daemon if it was started here (it shuts its containers down first)."""
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(60)


def _compose_command() -> list[str]:
    if run("docker", "compose", "version", check=False, timeout=30).returncode == 0:
        return ["docker", "compose"]
    if which("docker-compose"):
        return ["docker-compose"]
    raise EngineUnavailable(
        "neither `docker compose` nor docker-compose is installed (apt-get install docker-compose)"
    )


def image_exists(tag: str) -> bool:
    """Whether the engine's image store holds `tag`."""
    return docker("image", "inspect", tag, check=False, timeout=60).returncode == 0


def _recipe_key() -> str:
    """Hash of everything the base images are made from: the recipes and the local CAs."""
    digest = hashlib.sha256(ROOT_FS.encode())
    for path in [*sorted(RECIPES.iterdir()), *sorted(LOCAL_CA.rglob("*.crt"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def local_base_images() -> tuple[str, str]:
    """Tags of the (python, postgres) stand-in images, made now unless already in the image store.

    Raises EngineUnavailable when debootstrap is missing; CalledProcessError when a step fails.
    """
    key = _recipe_key()
    debian, python, postgres = (
        f"todo-api-test-{name}:{key}" for name in ("debian", "python", "postgres")
    )
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once make them once
        if image_exists(python) and image_exists(postgres):
            return python, postgres
        if not image_exists(debian):
            _import_debian(debian)
        with tempfile.TemporaryDirectory() as context:
            shutil.copytree(RECIPES, context, dirs_exist_ok=True)
            (Path(context) / "ca-certificates").mkdir()
            if LOCAL_CA.is_dir():
                shutil.copytree(LOCAL_CA, Path(context) / "ca-certificates", dirs_exist_ok=True)
            for tag, recipe in ((python, "python.Dockerfile"), (postgres, "postgres.Dockerfile")):
                docker(
                    "build",
                    "-q",
                    "-t",
                    tag,
                    "-f",
                    f"{context}/{recipe}",
                    "--build-arg",
                    f"BASE={debian}",
                    context,
                )
        _remove_other_tags(key)
    return python, postgres


def _import_debian(tag: str) -> None:
    """A minimal Debian bookworm root file system made by debootstrap, imported as `tag`."""
    debootstrap = which("debootstrap")
    if not debootstrap:
        raise EngineUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    root = Path(tempfile.mkdtemp(prefix="todo-api-debian-"))
    try:
        run(debootstrap, "--variant=minbase", "bookworm", str(root), timeout=900)
        for cached in [
            *(root / "var/cache/apt/archives").glob("*.deb"),
            *(root / "var/lib/apt/lists").glob("*_*"),
        ]:
            # downloaded packages and package lists: the images' builds fetch their own
            cached.unlink()
        # The with block waits for tar; the pipe's read end is closed here once `docker import`
        # has it (else it would be left to the garbage collector, a ResourceWarning), so a tar
        # still writing when the import stopped reading gets SIGPIPE instead of blocking.
        with subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE
        ) as tar:
            try:
                docker("import", "--change", 'CMD ["bash"]', "-", tag, stdin=tar.stdout)
            finally:
                tar.stdout.close()
        if tar.returncode != 0:
            raise subprocess.CalledProcessError(tar.returncode, tar.args)
    finally:
        _remove_root(root)


def _remove_root(root: Path) -> None:
    """Delete a debootstrap target, first unmounting what an interrupted run left mounted in it
    (/proc, /sys, a bind-mounted /dev: deleting through those would reach the host's)."""

    def mounted() -> list[str]:
        points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        return [point for point in points if point.startswith(f"{root}/")]

    for point in reversed(mounted()):
        run("umount", "-l", point, check=False)
    if mounted():
        raise RuntimeError(f"{root} still has mounts; left in place: {mounted()}")
    shutil.rmtree(root)


def _remove_other_tags(key: str) -> None:
    """Forget base images made from an earlier recipe (their tags carry another key)."""
    for name in ("debian", "python", "postgres"):
        listed = docker(
            "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"todo-api-test-{name}"
        ).stdout
        stale = [tag for tag in listed.split() if not tag.endswith(f":{key}")]
        if stale:
            docker("image", "rm", *stale, check=False)
