# On Google Colab: install ntklib, keeping Colab's accelerator JAX (a no-op elsewhere).
# Source: book/colab_install.py; `python tests/update_colab_cells.py` copies it here.
import os
import shutil
import subprocess
import sys
import tempfile

REPOSITORY_URL = (
    "https://github.com/ntk-collapse/ntk-collapse-book"  # = _config.yml repository.url
)
JAX_RANGE = ">=0.7,<=0.10.2"  # = ntklib's jax requirement in pyproject.toml
JAX_DISTRIBUTIONS = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt")


def gpu_runtime(environ=os.environ, which=shutil.which):
    """Whether this runtime has an NVIDIA GPU (Colab sets COLAB_GPU, or nvidia-smi)."""
    return (
        environ.get("COLAB_GPU", "") not in ("", "0") or which("nvidia-smi") is not None
    )


def install_ntklib(installed_version, run, gpu):
    """Install ntklib, keeping a preinstalled JAX within JAX_RANGE; return the commands.

    installed_version(name) -> version string or None; run(command list) runs one
    command. If the kept JAX cannot satisfy ntklib's other requirements, pip fails
    loudly instead of replacing it.
    """
    from packaging.specifiers import SpecifierSet

    pip = [sys.executable, "-m", "pip", "install", "-q"]
    ntklib = f"ntklib @ git+{REPOSITORY_URL}"
    jax_version = installed_version("jax")
    if jax_version is not None and SpecifierSet(JAX_RANGE).contains(jax_version):
        # Keep it: pin every installed JAX distribution while pip resolves the rest.
        pins = [
            f"{name}=={installed_version(name)}"
            for name in JAX_DISTRIBUTIONS
            if installed_version(name)
        ]
        with tempfile.NamedTemporaryFile(
            "w", suffix="-constraints.txt", delete=False
        ) as f:
            f.write("\n".join(pins) + "\n")
        commands = [[*pip, "-c", f.name, ntklib]]
    else:
        jax = f"jax[cuda12]{JAX_RANGE}" if gpu else f"jax{JAX_RANGE}"
        commands = [[*pip, jax, ntklib]]
    for command in commands:
        run(command)
    return commands


def backend_warning(backend, gpu):
    """A loud message when a GPU runtime ended with JAX on the CPU, else None."""
    if gpu and backend == "cpu":
        return (
            "!" * 78 + "\nWARNING: this runtime has a GPU, but JAX runs on the CPU."
            "\nEvery chapter would still run, slowly. Restart the runtime and"
            "\nrun this cell again; if it persists, reinstall JAX with"
            f'\n  %pip install "jax[cuda12]{JAX_RANGE}"\n' + "!" * 78
        )
    return None


def installed(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if "google.colab" in sys.modules:
    _gpu = gpu_runtime()
    install_ntklib(installed, lambda command: subprocess.run(command, check=True), _gpu)
    import jax

    print(
        f"jax {jax.__version__}, backend {jax.default_backend()},",
        f"devices {jax.devices()}",
    )
    _warning = backend_warning(jax.default_backend(), _gpu)
    if _warning:
        print(_warning, file=sys.stderr)
