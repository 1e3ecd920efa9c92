"""The CDP's own JVM classes (package io.cdp.sql, sources beside this file): the SQL endpoint's role
guard (a Spark session extension), its statement log (a listener on the Thrift server's events) and
its password check (HiveServer2 CUSTOM authentication).

They are compiled with the JDK's javac against the jars of the Spark that runs them, once per
version of the sources and of Spark, into a cache folder (CDP_CACHE_DIR, else ~/.cache/cdp): the
machine that runs a role's endpoint needs a JDK once. Only the endpoint's driver loads them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pyspark

SOURCES = Path(__file__).resolve().parent
JAR_NAME = "cdp-sql-endpoint"


class JvmBuildError(RuntimeError):
    """The classes cannot be compiled here: the message says what is missing and how to fix it."""


def sources() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def spark_jars() -> Path:
    """The jars folder of the Spark this Python runs (SPARK_HOME, else the pyspark distribution's)."""
    home = os.environ.get("SPARK_HOME")
    folder = Path(home) / "jars" if home else Path(pyspark.__file__).resolve().parent / "jars"
    if not folder.is_dir():
        raise JvmBuildError(f"{folder} does not exist. Fix: point SPARK_HOME at a Spark {pyspark.__version__} "
                            f"installation, or unset it to use pyspark's own jars.")
    return folder


def cache_dir() -> Path:
    return Path(os.environ.get("CDP_CACHE_DIR") or Path.home() / ".cache" / "cdp")


def endpoint_jar() -> Path:
    """The compiled jar from the cache, compiled first when the sources or Spark changed."""
    digest = hashlib.sha256(pyspark.__version__.encode())
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = cache_dir() / f"{JAR_NAME}-{digest.hexdigest()[:16]}.jar"
    if target.is_file():
        return target
    javac = _javac()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cdp-javac-") as work:
        classes = Path(work) / "classes"
        class_path = os.pathsep.join(str(j) for j in sorted(spark_jars().glob("*.jar")))
        done = subprocess.run([javac, "-nowarn", "--release", "17", "-d", str(classes), "-cp", class_path,
                               *map(str, sources())], capture_output=True, text=True)
        if done.returncode != 0:
            raise JvmBuildError(f"javac could not compile {SOURCES}: {done.stderr.strip()[:2000]}")
        staging = Path(work) / target.name
        with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nCreated-By: cdp\r\n\r\n")
            for path in sorted(classes.rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
        shutil.move(str(staging), target)  # whole or absent: a concurrent build writes the same bytes
    return target


def _javac() -> str:
    home = os.environ.get("JAVA_HOME")
    candidates = [Path(home) / "bin" / "javac"] if home else []
    found = shutil.which("javac")
    candidates += [Path(found)] if found else []
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise JvmBuildError("the SQL endpoint's role guard needs a JDK (javac) to be compiled once, and none was found. "
                        "Fix: install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME to "
                        "one.")
