"""The demo behind ./scripts/demo: dock a simulated camera and watch it offload."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo-state"
BWC_DOCK = str(Path(sys.executable).parent / "bwc-dock")
SERIAL = "X81234567"
CLIPS = 8
console = Console()


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    config = write_config()
    environment = {**os.environ, "BWC_DOCK_CONFIG": str(config)}
    environment.pop("JOURNAL_STREAM", None)
    subprocess.run([BWC_DOCK, "config", "check"], env=environment, check=True)
    camera = make_camera(DEMO / "camera-being-prepared")
    console.print(f"[bold]simulated camera {SERIAL}[/]: {CLIPS} clips with sidecars in "
                  f"{camera}")
    log_path = DEMO / "daemon.log"
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen([BWC_DOCK, "run"], env=environment, stdout=log_file,
                                  stderr=log_file)
    try:
        time.sleep(1.0)
        console.print(f"docking: moving the camera volume into {DEMO / 'watch'}")
        camera.rename(DEMO / "watch" / SERIAL)
        ok = follow_progress(environment, daemon)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    console.print(f"daemon log: {log_path}")
    subprocess.run([BWC_DOCK, "clips"], env=environment, check=True)
    subprocess.run([BWC_DOCK, "status"], env=environment, check=True)
    subprocess.run([BWC_DOCK, "audit", "verify"], env=environment, check=True)
    console.print(f"central storage: {DEMO / 'central'}")
    return 0 if ok else 1


def write_config() -> Path:
    for folder in ("state", "central", "watch"):
        (DEMO / folder).mkdir(parents=True, exist_ok=True)
    (DEMO / "central" / ".bwc-dock-store").touch()  # the share's marker file
    config = DEMO / "config.toml"
    config.write_text(f"""\
[dock]
id = "demo-dock"
state_dir = "{DEMO / 'state'}"
staging_reserve_mb = 0

[storage]
backend = "file"
path = "{DEMO / 'central'}"

[sources]
udev = false
watch_dirs = ["{DEMO / 'watch'}"]
rescan_interval_seconds = 5

[service]
heartbeat_seconds = 1

[[camera]]
name = "demo-bodycam"
serial_source = "folder"
clips = ["DCIM/**/*.MP4"]
recorded_pattern = '(?P<Y>\\d{{4}})(?P<m>\\d{{2}})(?P<d>\\d{{2}})_(?P<H>\\d{{2}})(?P<M>\\d{{2}})(?P<S>\\d{{2}})'
""")
    return config


def make_camera(root: Path) -> Path:
    """A DCIM tree of real MP4 clips (ffmpeg test pattern and tone) with sidecars."""
    folder = root / "DCIM" / "100BWC"
    folder.mkdir(parents=True)
    rng = random.Random(7)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        console.print("[yellow]ffmpeg not found: clips will be random bytes, not video[/]")
    for number in range(1, CLIPS + 1):
        stem = f"20261124_{7 + number:02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        clip = folder / f"{stem}.MP4"
        seconds = 2 + number % 4
        if ffmpeg:
            subprocess.run(
                [ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i",
                 f"testsrc2=duration={seconds}:size=640x360:rate=25", "-f", "lavfi", "-i",
                 f"sine=frequency={300 + number * 40}:duration={seconds}", "-shortest",
                 "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                 "-c:a", "aac", str(clip)], check=True)
            subprocess.run(
                [ffmpeg, "-loglevel", "error", "-i", str(clip), "-frames:v", "1",
                 str(folder / f"{stem}.JPG")], check=True)
        else:
            clip.write_bytes(rng.randbytes(200_000 * seconds))
        (folder / f"{stem}.GPS").write_text("".join(
            f"$GPRMC,{7 + number:02d}{s:02d}00,A,4807.038,N,01131.000,E,0.0,0.0,241126,,*6A\n"
            for s in range(seconds)))
        (folder / f"{stem}.LOG").write_text(json.dumps(
            {"camera": SERIAL, "officer": "unassigned", "trigger": "manual"}) + "\n")
    return root


def follow_progress(environment: dict[str, str], daemon: subprocess.Popen[bytes]) -> bool:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        staged = progress.add_task("copied off the camera", total=CLIPS)
        uploaded = progress.add_task("verified in central storage", total=CLIPS)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                console.print("[red]the daemon stopped unexpectedly[/]")
                return False
            clips = json.loads(subprocess.run(
                [BWC_DOCK, "clips", "--json"], env=environment, capture_output=True,
                text=True, check=True).stdout)
            states = [clip["state"] for clip in clips]
            progress.update(staged, completed=sum(s != "discovered" and s != "copying"
                                                  for s in states))
            progress.update(uploaded, completed=states.count("uploaded"))
            if len(states) == CLIPS and all(s == "uploaded" for s in states):
                return True
            time.sleep(0.5)
    console.print("[red]not every clip was uploaded in time[/]")
    return False


if __name__ == "__main__":
    sys.exit(main())
