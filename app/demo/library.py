"""Builds the sample library from real photos that ship inside installed packages.

Photos come from scikit-image, scikit-learn and matplotlib; captions are the project's own. The
words reach ingestion every way it reads them: a ``captions.csv`` manifest, a
``captions.jsonl`` manifest, ``photo.jpg.txt`` sidecars, an EXIF ImageDescription and a PNG text
chunk. A few Markdown and text notes give the text signal documents to retrieve.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, PngImagePlugin


@dataclass(frozen=True, slots=True)
class SamplePhoto:
    file: str  # relative to the library root
    caption: str
    tags: tuple[str, ...]
    how: str  # csv | jsonl | sidecar | exif | png-text


def _skimage(name: str) -> Callable[[], npt.NDArray[np.uint8]]:
    def load() -> npt.NDArray[np.uint8]:
        from skimage import data

        loaded = getattr(data, name)()
        arr = np.asarray(loaded[0] if isinstance(loaded, tuple) else loaded)  # stereo pairs
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        return arr.astype(np.uint8)

    return load


def _sklearn(index: int) -> Callable[[], npt.NDArray[np.uint8]]:
    def load() -> npt.NDArray[np.uint8]:
        from sklearn.datasets import load_sample_images

        return np.asarray(load_sample_images().images[index], dtype=np.uint8)

    return load


def _grace_hopper() -> npt.NDArray[np.uint8]:
    import matplotlib.cbook

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


PHOTOS: tuple[tuple[SamplePhoto, Callable[[], npt.NDArray[np.uint8]]], ...] = (
    (
        SamplePhoto(
            "photos/people/astronaut.png",
            "Portrait of astronaut Eileen Collins in an orange launch suit, with the US flag "
            "and a space shuttle model behind her.",
            ("people", "space"),
            "csv",
        ),
        _skimage("astronaut"),
    ),
    (
        SamplePhoto(
            "photos/people/grace_hopper.jpg",
            "Rear Admiral Grace Hopper, computer scientist, in her US Navy dress uniform.",
            ("people", "computing"),
            "csv",
        ),
        _grace_hopper,
    ),
    (
        SamplePhoto(
            "photos/people/cameraman.png",
            "Black and white photo of a man with a film camera on a tripod in a field.",
            ("people",),
            "csv",
        ),
        _skimage("camera"),
    ),
    (
        SamplePhoto(
            "photos/animals/chelsea.jpg",
            "Chelsea, a ginger tabby cat, looking up at the camera.",
            ("animals", "pets"),
            "sidecar",
        ),
        _skimage("chelsea"),
    ),
    (
        SamplePhoto(
            "photos/animals/horse.png",
            "Silhouette of a horse standing, drawn in black on white.",
            ("animals",),
            "png-text",
        ),
        _skimage("horse"),
    ),
    (
        SamplePhoto(
            "photos/food/coffee.jpg",
            "A cup of coffee with latte art on a saucer, with a spoon.",
            ("food", "drink"),
            "exif",
        ),
        _skimage("coffee"),
    ),
    (
        SamplePhoto(
            "photos/space/rocket.jpg",
            "A rocket lifting off from the launch pad, with a plume of smoke and fire.",
            ("space",),
            "jsonl",
        ),
        _skimage("rocket"),
    ),
    (
        SamplePhoto(
            "photos/space/hubble_deep_field.jpg",
            "Hubble Deep Field: thousands of distant galaxies in a tiny patch of dark sky.",
            ("space", "astronomy"),
            "jsonl",
        ),
        _skimage("hubble_deep_field"),
    ),
    (
        SamplePhoto(
            "photos/space/moon.png",
            "Grey close-up of the cratered surface of the Moon.",
            ("space", "astronomy"),
            "jsonl",
        ),
        _skimage("moon"),
    ),
    (
        SamplePhoto(
            "photos/objects/coins.png",
            "Old coins laid out in rows on a dark background.",
            ("objects", "money"),
            "sidecar",
        ),
        _skimage("coins"),
    ),
    (
        SamplePhoto(
            "photos/objects/motorcycle.jpg",
            "A red motorcycle parked indoors, seen from the side.",
            ("objects", "vehicles"),
            "sidecar",
        ),
        _skimage("stereo_motorcycle"),
    ),
    (
        SamplePhoto(
            "photos/places/china_temple.jpg",
            "A Chinese temple with a curved roof among trees under a blue sky.",
            ("places", "travel"),
            "csv",
        ),
        _sklearn(0),
    ),
    (
        SamplePhoto(
            "photos/places/flower.jpg",
            "Close-up of a pink flower with yellow centre.",
            ("plants",),
            "csv",
        ),
        _sklearn(1),
    ),
    (
        SamplePhoto(
            "photos/scans/page.png",
            "A scanned page of printed text, photographed at an angle.",
            ("documents",),
            "csv",
        ),
        _skimage("page"),
    ),
)

NOTES: dict[str, str] = {
    "notes/coffee-brewing.md": """# Coffee brewing notes

Our office espresso machine is set to 9 bar and 93 degrees Celsius. A double shot uses 18 grams
of finely ground coffee and should run for 25 to 30 seconds, giving about 36 grams of espresso.

For latte art, steam the milk to 60 degrees Celsius and pour from close to the cup.
""",
    "notes/space-trip.md": """# Visit to the space museum

We saw the Saturn V rocket hall and a full-size model of the space shuttle. The guide said the
shuttle flew 135 missions between 1981 and 2011. Eileen Collins was the first woman to pilot
and later command a space shuttle.
""",
    "notes/cat-care.txt": """Chelsea the cat eats twice a day: a quarter can of wet food in the
morning and 30 grams of dry food in the evening. Her vet appointment is every March; she is
vaccinated against rabies and her last check-up found her healthy at 4.2 kilograms.
""",
}


def _save(arr: npt.NDArray[np.uint8], target: Path, photo: SamplePhoto) -> None:
    img = Image.fromarray(arr)
    target.parent.mkdir(parents=True, exist_ok=True)
    if photo.how == "exif":
        exif = Image.Exif()
        exif[0x010E] = photo.caption  # ImageDescription
        img.save(target, exif=exif, quality=90)
    elif photo.how == "png-text":
        info = PngImagePlugin.PngInfo()
        info.add_text("Description", photo.caption)
        img.save(target, pnginfo=info)
    elif target.suffix == ".jpg":
        img.save(target, quality=90)
    else:
        img.save(target)


def build_library(root: Path) -> list[SamplePhoto]:
    """Writes the sample library under ``root`` (idempotent: identical bytes every time)."""
    root.mkdir(parents=True, exist_ok=True)
    csv_rows: dict[Path, list[SamplePhoto]] = {}
    jsonl_rows: dict[Path, list[SamplePhoto]] = {}
    for photo, load in PHOTOS:
        target = root / photo.file
        if not target.exists():
            _save(load(), target, photo)
        if photo.how == "csv":
            csv_rows.setdefault(target.parent, []).append(photo)
        elif photo.how == "jsonl":
            jsonl_rows.setdefault(target.parent, []).append(photo)
        elif photo.how == "sidecar":
            target.with_name(target.name + ".txt").write_text(photo.caption + "\n")
    for folder, photos in csv_rows.items():
        with (folder / "captions.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "caption", "tags"])
            for p in photos:
                writer.writerow([Path(p.file).name, p.caption, ";".join(p.tags)])
    for folder, photos in jsonl_rows.items():
        lines = [
            json.dumps({"file": Path(p.file).name, "caption": p.caption, "tags": list(p.tags)})
            for p in photos
        ]
        (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    for rel, text in NOTES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return [p for p, _ in PHOTOS]


# -- media: a narrated video, a recorded meeting, a PDF with a scanned page -----------------

MEDIA_NARRATION = (
    "Welcome to the harbour. The ferry to Stone Island leaves every hour from pier seven, "
    "and the last ferry returns at ten in the evening."
)
MEDIA_MEETING = (
    "Thanks for joining the product meeting. After a long discussion, the team agreed "
    "to move the product launch to the fourteenth of March."
)
MEDIA_HANDBOOK = (
    ("Employee handbook", "Chapter one: welcome to the company."),
    (
        "Chapter two: working from home.",
        "Employees may work from home on Tuesdays and Thursdays.",
        "Tell your team lead by Monday noon.",
    ),
)
MEDIA_SCANNED = "Parking permits are renewed\nevery January at the front desk."


def build_media(root: Path) -> list[Path]:
    """Writes a narrated video, a spoken recording and a PDF (with a scanned page) under
    ``root/media`` (idempotent). Needs espeak-ng for the voices."""
    from app.demo.media import (
        PdfPage,
        Scene,
        make_pdf,
        make_speech,
        make_video,
        render_text_image,
    )

    folder = root / "media"
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "harbour-tour.mp4"
    if not video.exists():
        scenes = [
            Scene("HARBOUR", (20, 60, 140)),
            Scene("FERRY", (200, 120, 20)),
            Scene("STONE ISLAND", (30, 140, 60)),
        ]
        with tempfile.TemporaryDirectory() as scratch:
            narration = make_speech(Path(scratch) / "narration.wav", MEDIA_NARRATION)
            make_video(video, scenes, seconds_per_scene=4.0, size=(640, 360), audio=narration)
    meeting = folder / "product-meeting.mp3"
    if not meeting.exists():
        make_speech(meeting, MEDIA_MEETING)
    handbook = folder / "employee-handbook.pdf"
    if not handbook.exists():
        scanned = render_text_image(MEDIA_SCANNED, size=(1224, 1584), font_px=72)
        pages = [PdfPage(lines=lines) for lines in MEDIA_HANDBOOK] + [PdfPage(image=scanned)]
        make_pdf(handbook, pages)
    return [video, meeting, handbook]
