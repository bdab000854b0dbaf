"""Dataset layouts → manifests, on small synthetic copies of each layout built in tmp_path."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medmoe.cli import app
from medmoe.data.manifest import Manifest, read_manifest, write_manifest
from medmoe.data.sources import SOURCES, TASK_SOURCES, prepare_all, prepare_source
from medmoe.data.sources._base import list_images
from medmoe.errors import ConfigError, DatasetError
from medmoe.io.formats import image_format, image_stem, image_suffix

# ---------------------------------------------------------------- helpers


def write(path: Path, content: bytes | None = None) -> Path:
    """A file whose bytes are unique to its path unless ``content`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if content is not None else f"image {path}".encode())
    return path


def write_png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6), value, dtype=np.uint8)).save(path)
    return path


def write_dicom(path: Path, patient_id: str) -> Path:
    """A tiny valid DICOM file (8×8 MONOCHROME2) for one patient."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = patient_id, "CR"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 7, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(64))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_split(root: Path, lists: dict[str, list[str]]) -> None:
    tree: dict = {}
    for key, names in lists.items():
        node = tree
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = names
    write(root / "splits" / "data.json", json.dumps(tree).encode())


def counts(manifest: Manifest) -> tuple[int, int, int, int]:
    """(train, val, test normal, test abnormal)."""
    c = Counter((s.split, s.label) for s in manifest.samples)
    return c["train", 0], c["val", 0], c["test", 0], c["test", 1]


def flagged(manifest: Manifest, flag: str) -> set[str]:
    return {s.path for s in manifest.samples if flag in s.flags}


def split_of(manifest: Manifest) -> dict[str, str]:
    return {s.path: s.split for s in manifest.samples}


# ---------------------------------------------------------------- layouts


def make_headct(root: Path, n_normal: int = 20, n_hemorrhage: int = 20) -> Path:
    rows = ["id, hemorrhage"]
    for i in range(n_hemorrhage + n_normal):
        rows.append(f"{i},{int(i < n_hemorrhage)}")
        write_png(root / "head_ct" / "head_ct" / f"{i:03d}.png", value=i)
    write(root / "labels.csv", ("\n".join(rows) + "\n").encode())
    write(root / "SOURCE.md")
    write(root / "PROVENANCE.csv")
    return root


def make_busi(root: Path) -> Path:
    base = root / "Dataset_BUSI_with_GT"
    for cls, n in (("normal", 8), ("benign", 3), ("malignant", 2)):
        for i in range(1, n + 1):
            write(base / cls / f"{cls} ({i}).png")
            write(base / cls / f"{cls} ({i})_mask.png")
    write(base / "benign" / "benign (2)_mask_2.png")
    write(base / "benign" / "benign (2)_mask_1.png")
    write(base / "malignant" / "malignant (2).png", (base / "benign" / "benign (3).png").read_bytes())
    write(base / "malignant" / "malignant (9)_mask.png")  # its image is missing
    write(root / "near_duplicate_pairs.csv")
    return root


def make_brain(root: Path) -> Path:
    for part, prefix in (("Training", "Tr"), ("Testing", "Te")):
        for cls, code in (("notumor", "no"), ("glioma", "gl"), ("meningioma", "me"), ("pituitary", "pi")):
            for i in range(6):
                write(root / part / cls / f"{prefix}-{code}_{i:04d}.jpg")
    write(root / "Testing" / "notumor" / "Te-noTr_0000.jpg")
    write(root / "Testing" / "notumor" / "Te-no_0005.jpg", (root / "Training/notumor/Tr-no_0001.jpg").read_bytes())
    write_split(root, {
        "train/0": [f"Tr-no_{i:04d}.jpg" for i in range(6)] + ["Tr-no_1011.jpg", "Te-noTr_0000.jpg"],
        "train/unlabeled/0": ["Tr-no_1012.jpg"],
        "train/unlabeled/1": ["Tr-gl_0000.jpg"],
        "test/0": [f"Te-no_{i:04d}.jpg" for i in range(6)] + ["Tr-no_1020.jpg", "garbage.jpg"],
        "test/1": [f"Te-gl_{i:04d}.jpg" for i in range(3)] + [f"Te-me_{i:04d}.jpg" for i in range(3)],
    })
    return root


def make_chest(root: Path) -> Path:
    base = root / "chest_xray"
    for i in range(10):
        write(base / "train" / "NORMAL" / f"IM-{i:04d}-0001.jpeg")
        write(base / "train" / "PNEUMONIA" / f"person{i}_bacteria_1.jpeg")
    for i in range(3):
        write(base / "test" / "NORMAL" / f"NORMAL2-IM-{i:04d}-0001.jpeg")
    write(base / "test" / "PNEUMONIA" / "person1_bacteria_2.jpeg")
    write(base / "test" / "PNEUMONIA" / "person2_virus_3.jpeg")
    write(base / "test" / "PNEUMONIA" / "odd.jpeg")
    write(base / "val" / "NORMAL" / "IM-9999-0001.jpeg")
    write(base / "chest_xray" / "train" / "NORMAL" / "inner-copy.jpeg")  # Kaggle's duplicate inner tree
    write(root / "__MACOSX" / "chest_xray" / "._x.jpeg")
    return root


def make_eye(root: Path, pairs: int = 30, singles: int = 10) -> Path:
    normal, glaucoma = root / "dataset" / "normal", root / "dataset" / "glaucoma"
    for pid in range(pairs):
        write(normal / f"{pid}_left.jpg")
        write(normal / f"{pid}_right.jpg")
    for pid in range(100, 100 + singles):
        write(normal / f"{pid}_left.jpg")
    write(normal / "999_right.jpg")  # this patient's left eye is glaucomatous
    write(glaucoma / "999_left.jpg")
    write(glaucoma / "500_right.jpg")
    write(glaucoma / "_1_123456.jpg")
    write(glaucoma / "Glaucoma_001.png")
    write(root / "dataset" / "cataract" / "1_left.jpg")
    return root


def make_rsna(root: Path, images: bool = True) -> Path:
    ids = {key: [f"{key.replace('/', '-')}-{i}" for i in range(n)] for key, n in
           (("train/0", 6), ("train/unlabeled/1", 1), ("test/0", 3), ("test/1", 3))}
    rows = ["patientId,x,y,width,height,Target"]
    rows += [f"{pid},,,,,0" for key in ("train/0", "test/0") for pid in ids[key]]
    rows += [f"{ids['test/1'][0]},264.0,152.0,213.0,379.0,1", f"{ids['test/1'][0]},562.0,152.5,256.0,453.0,1",
             f"{ids['test/1'][1]},10.0,20.0,30.0,40.0,1", f"{ids['test/1'][2]},,,,,0"]
    write(root / "stage_2_train_labels.csv", ("\n".join(rows) + "\n").encode())
    write_split(root, {k: [f"{pid}.png" for pid in v] for k, v in ids.items()})
    if images:
        for key in ("train/0", "test/0", "test/1"):
            for pid in ids[key]:
                write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", pid)
    return root


def make_lag(root: Path, flat: bool) -> Path:
    lists = {"train/0": [f"{i:04d}.jpg" for i in range(1, 11)], "test/0": ["0011.jpg", "0012.jpg"],
             "test/1": ["0013.jpg", "0014.jpg", "0015.jpg"], "train/unlabeled/1": ["0016.jpg"]}
    write_split(root, lists)
    for key, names in lists.items():
        cls = "suspicious_glaucoma" if key.endswith("1") else "non_glaucoma"
        for name in names[:-1] if key == "test/1" else names:  # one test/1 image missing
            write(root / ("images" if flat else f"LAG/{cls}/image") / name)
    return root


def make_folder(root: Path) -> Path:
    for i in range(10):
        write(root / "train" / "normal" / f"site{i % 2}" / f"n{i}.png")
    write(root / "train" / "abnormal" / "x.png")
    for i in range(3):
        write(root / "test" / "normal" / f"t{i}.PNG")
    write(root / "test" / "abnormal" / "tumor" / "a1.nii.gz")
    write(root / "test" / "abnormal" / "tumor" / "deep" / "a2.jpg")
    write(root / "test" / "abnormal" / "a3.dcm")
    write(root / "test" / "abnormal" / "notes.txt")
    write(root / "masks" / "tumor" / "a1.nii.gz")
    write(root / "masks" / "tumor" / "deep" / "a2.png")
    write(root / "masks" / "stray.png")
    return root


# ---------------------------------------------------------------- image-file rules


def test_image_files_by_suffix_case_insensitive(tmp_path: Path) -> None:
    for name in ("a.png", "b.JPG", "c.jpeg", "d.tif", "e.TIFF", "f.bmp", "g.dcm", "h.nii", "i.nii.gz",
                 "SOURCE.md", "PROVENANCE.csv", ".DS_Store", "._a.png", "j.gz"):
        write(tmp_path / name)
    assert [p.name for p in list_images(tmp_path)] == [
        "a.png", "b.JPG", "c.jpeg", "d.tif", "e.TIFF", "f.bmp", "g.dcm", "h.nii", "i.nii.gz"]
    assert image_suffix("scan.NII.GZ") == ".nii.gz"
    assert image_stem("scan.nii.gz") == "scan"
    assert image_suffix("notes.txt") is None


def test_prepare_and_detect_agree_on_every_suffix(tmp_path: Path) -> None:
    """A file ``medmoe detect`` reads is listed by ``medmoe prepare`` (``.dicom`` was skipped by it)."""
    for suffix in (".png", ".tiff", ".dcm", ".dicom", ".nii.gz", ".NII", ".DICOM"):
        write(tmp_path / f"scan{suffix}")
    listed = {p.name for p in list_images(tmp_path)}
    assert listed == {p.name for p in tmp_path.iterdir() if image_format(p) is not None}
    assert "scan.dicom" in listed and image_stem("study/scan.DICOM") == "study/scan"


# ---------------------------------------------------------------- headct


def test_headct_seeded_split_counts_and_unresolved(tmp_path: Path) -> None:
    root = make_headct(tmp_path / "headct")
    (root / "head_ct" / "head_ct" / "039.png").unlink()  # a labelled normal without its file
    write_png(root / "head_ct" / "head_ct" / "777.png", 200)  # an image without a label
    m = prepare_source("headct", root, seed=0)
    assert counts(m) == (15, 2, 2, 20)  # 19 normals: 17 train incl. val (90/100 of 19 = 17.1), 2 val
    assert m.meta["unresolved"] == "2"
    assert m.meta["unresolved_names"] == "labels.csv:id 39, head_ct/head_ct/777.png"
    assert {s.subclass for s in m.samples if s.label} == {"hemorrhage"}
    assert all(s.task == "head_ct" and not Path(s.path).is_absolute() for s in m.samples)


def test_headct_full_size_gives_paper_counts(tmp_path: Path) -> None:
    m = prepare_source("headct", make_headct(tmp_path, n_normal=100, n_hemorrhage=100), seed=0)
    train, val, test_normal, test_abnormal = counts(m)
    assert (train + val, test_normal, test_abnormal) == (90, 10, 100)
    assert val == 9


def test_seeded_split_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    root = make_headct(tmp_path)
    a, b, c = (prepare_source("headct", root, seed=s) for s in (0, 0, 1))
    assert a.samples == b.samples
    test_a = {s.path for s in a.samples if s.split == "test" and s.label == 0}
    test_c = {s.path for s in c.samples if s.split == "test" and s.label == 0}
    assert test_a != test_c
    assert c.meta["seed"] == "1"


def test_identical_files_stay_on_one_side_of_seeded_splits(tmp_path: Path) -> None:
    root = make_headct(tmp_path)
    images = root / "head_ct" / "head_ct"
    write(images / "039.png", (images / "038.png").read_bytes())
    for seed in range(6):
        m = prepare_source("headct", root, seed=seed)
        splits = split_of(m)
        assert splits["head_ct/head_ct/038.png"] == splits["head_ct/head_ct/039.png"]
        assert flagged(m, "duplicate") == {"head_ct/head_ct/039.png"}
        assert not flagged(m, "dup_of_train")


def test_headct_errors_name_the_folder_and_the_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        prepare_source("headct", tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "felipekitamura/head-ct-hemorrhage" in str(err.value)
    write(tmp_path / "head_ct" / "head_ct" / "000.png")
    with pytest.raises(DatasetError, match="no labels.csv"):
        prepare_source("headct", tmp_path)
    write(tmp_path / "labels.csv", b"name,value\n0,1\n")
    with pytest.raises(DatasetError, match="header"):
        prepare_source("headct", tmp_path)
    write(tmp_path / "labels.csv", b"id,hemorrhage\n0,2\n")
    with pytest.raises(DatasetError, match="line 2"):
        prepare_source("headct", tmp_path)


# ---------------------------------------------------------------- busi


def test_busi_masks_conflicts_and_orphans(tmp_path: Path) -> None:
    m = prepare_source("busi", make_busi(tmp_path), seed=0)
    train, val, test_normal, test_abnormal = counts(m)
    assert (train + val, test_normal, test_abnormal) == (6, 2, 5)  # 99/133 of 8 normals → 6
    by_path = {s.path: s for s in m.samples}
    b2 = by_path["Dataset_BUSI_with_GT/benign/benign (2).png"]
    assert b2.mask.split("|") == [f"Dataset_BUSI_with_GT/benign/benign (2)_mask{k}.png" for k in ("", "_1", "_2")]
    assert all(s.mask.endswith("_mask.png") for s in m.samples if s.label == 0)
    assert flagged(m, "label_conflict") == {"Dataset_BUSI_with_GT/benign/benign (3).png",
                                            "Dataset_BUSI_with_GT/malignant/malignant (2).png"}
    assert m.meta["unresolved"] == "1"
    assert "malignant (9)_mask.png" in m.meta["unresolved_names"]
    assert not any("_mask" in s.path for s in m.samples)
    inner = prepare_source("busi", tmp_path / "Dataset_BUSI_with_GT", seed=0)  # root = the inner folder
    assert len(inner.samples) == len(m.samples)


def test_busi_missing_class_folder_is_one_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "Dataset_BUSI_with_GT" / "normal" / "normal (1).png")
    with pytest.raises(DatasetError, match=r"Dataset_BUSI_with_GT/\{normal,benign,malignant\}"):
        prepare_source("busi", tmp_path)


# ---------------------------------------------------------------- brain_tumor


def test_brain_tumor_paper_split_unresolved_and_leakage(tmp_path: Path) -> None:
    root = make_brain(tmp_path)
    m = prepare_source("brain_tumor", root, seed=0)
    train, val, test_normal, test_abnormal = counts(m)
    assert (train + val, test_normal, test_abnormal) == (7, 6, 6)
    assert val == 1
    assert m.meta["unresolved"] == "3"
    assert m.meta["unresolved_names"] == "train/0:Tr-no_1011.jpg, test/0:Tr-no_1020.jpg, test/0:garbage.jpg"
    assert m.meta["unresolved_unused"] == "1"  # the missing file of an unlabeled list
    assert "Testing/notumor/Te-noTr_0000.jpg" in {s.path for s in m.samples if s.split != "test"}
    assert flagged(m, "dup_of_train") == {"Testing/notumor/Te-no_0005.jpg"}
    assert {s.subclass for s in m.samples if s.label} == {"glioma", "meningioma"}
    assert not any("pituitary" in s.path for s in m.samples)


def test_paper_split_does_not_change_with_the_seed(tmp_path: Path) -> None:
    root = make_brain(tmp_path)
    a, b = prepare_source("brain_tumor", root, seed=0), prepare_source("brain_tumor", root, seed=5)
    test = lambda m: {s.path for s in m.samples if s.split == "test"}  # noqa: E731
    assert test(a) == test(b)
    assert {s.path for s in a.samples} == {s.path for s in b.samples}


def test_brain_tumor_without_split_file(tmp_path: Path) -> None:
    write(tmp_path / "Training" / "notumor" / "Tr-no_0000.jpg")
    with pytest.raises(DatasetError, match="splits/data.json") as err:
        prepare_source("brain_tumor", tmp_path)
    assert "DDAD-ASR" in str(err.value)
    write(tmp_path / "splits" / "data.json", b'{"train": {"0": []}}')
    with pytest.raises(DatasetError, match="test/0"):
        prepare_source("brain_tumor", tmp_path)
    write(tmp_path / "splits" / "data.json", b"{not json")
    with pytest.raises(DatasetError, match="JSON"):
        prepare_source("brain_tumor", tmp_path)


# ---------------------------------------------------------------- chest_xray


def test_chest_xray_own_split_subclasses_and_ignored(tmp_path: Path) -> None:
    m = prepare_source("chest_xray", make_chest(tmp_path), seed=0)
    assert counts(m) == (9, 1, 3, 3)
    assert m.meta["ignored"] == "10 train/PNEUMONIA, 1 val/NORMAL"
    assert sorted(s.subclass for s in m.samples if s.label) == ["bacteria", "pneumonia", "virus"]
    assert not any("inner-copy" in s.path or "MACOSX" in s.path for s in m.samples)
    assert all(s.path.startswith("chest_xray/") for s in m.samples)
    assert len(prepare_source("chest_xray", tmp_path / "chest_xray").samples) == len(m.samples)


# ---------------------------------------------------------------- eye_diseases


def test_eye_diseases_patient_groups_and_other_source(tmp_path: Path) -> None:
    root = make_eye(tmp_path)
    for seed in range(4):
        m = prepare_source("eye_diseases", root, seed=seed)
        train, val, test_normal, test_abnormal = counts(m)
        assert train + val == 46  # round(71 normals × 700/1074)
        assert (test_normal, test_abnormal) == (25, 4)
        splits = split_of(m)
        for pid in range(30):
            assert splits[f"dataset/normal/{pid}_left.jpg"] == splits[f"dataset/normal/{pid}_right.jpg"]
        assert splits["dataset/normal/999_right.jpg"] == "test"
        assert flagged(m, "other_source") == {"dataset/glaucoma/_1_123456.jpg", "dataset/glaucoma/Glaucoma_001.png"}
        assert m.meta["other_source"] == "2"
        assert m.meta["normals_with_glaucoma_fellow_eye"] == "1"
    assert not any("cataract" in s.path for s in m.samples)


# ---------------------------------------------------------------- rsna


def test_rsna_paper_split_on_synthetic_dicoms_with_box_masks(tmp_path: Path) -> None:
    import pydicom

    root = make_rsna(tmp_path)
    m = prepare_source("rsna", root, seed=0)
    assert counts(m) == (5, 1, 3, 3)
    assert m.meta["unresolved"] == "0" and m.meta["unresolved_unused"] == "1"
    masks = {Path(s.path).stem: s.mask for s in m.samples if s.label}
    assert masks == {"test-1-0": "box:264,152,213,379;562,152.5,256,453", "test-1-1": "box:10,20,30,40",
                     "test-1-2": ""}
    assert m.meta["no_boxes"] == "1" and m.meta["no_boxes_names"] == "test-1-2"
    assert all(s.mask == "" for s in m.samples if s.label == 0)
    sample = m.samples[0]
    assert pydicom.dcmread(m.resolve(sample.path)).PatientID == Path(sample.path).stem
    assert not flagged(m, "duplicate")


def test_rsna_without_images_says_where_to_get_them(tmp_path: Path) -> None:
    root = make_rsna(tmp_path, images=False)
    assert not SOURCES["rsna"].has_images(root)
    with pytest.raises(DatasetError, match="stage_2_train_images") as err:
        prepare_source("rsna", root)
    assert "rsna-pneumonia-detection-challenge" in str(err.value)


# ---------------------------------------------------------------- lag


@pytest.mark.parametrize("flat", [False, True])
def test_lag_class_folders_or_flat_images(tmp_path: Path, flat: bool) -> None:
    m = prepare_source("lag", make_lag(tmp_path, flat=flat), seed=0)
    assert counts(m) == (9, 1, 2, 2)
    assert m.meta["unresolved_names"] == "test/1:0015.jpg"
    expected = "images/0013.jpg" if flat else "LAG/suspicious_glaucoma/image/0013.jpg"
    assert expected in {s.path for s in m.samples}
    assert {s.subclass for s in m.samples} == {"non_glaucoma", "suspicious_glaucoma"}


def test_lag_without_images(tmp_path: Path) -> None:
    write_split(tmp_path, {"train/0": [], "test/0": [], "test/1": []})
    assert not SOURCES["lag"].has_images(tmp_path)
    with pytest.raises(DatasetError, match="AG-CNN"):
        prepare_source("lag", tmp_path)


# ---------------------------------------------------------------- folder


def test_folder_layout_subclasses_masks_and_ignored(tmp_path: Path) -> None:
    m = prepare_source("folder", make_folder(tmp_path), seed=0, task="knee_mri")
    assert counts(m) == (9, 1, 3, 3)
    by_path = {s.path: s for s in m.samples}
    assert by_path["test/abnormal/tumor/a1.nii.gz"].mask == "masks/tumor/a1.nii.gz"
    assert by_path["test/abnormal/tumor/deep/a2.jpg"].mask == "masks/tumor/deep/a2.png"
    assert by_path["test/abnormal/a3.dcm"].mask == ""
    assert by_path["test/abnormal/tumor/deep/a2.jpg"].subclass == "tumor"
    assert by_path["test/abnormal/a3.dcm"].subclass == "abnormal"
    assert {s.task for s in m.samples} == {"knee_mri"}
    assert m.meta["ignored"] == "1 train/abnormal"
    assert m.meta["unmatched_masks"] == "1" and m.meta["unmatched_masks_names"] == "masks/stray.png"


def test_folder_own_validation_is_kept(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    write(root / "val" / "normal" / "v.png")
    m = prepare_source("folder", root, task="knee_mri")
    assert [s.path for s in m.samples if s.split == "val"] == ["val/normal/v.png"]
    assert counts(m)[0] == 10


def test_folder_errors(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    with pytest.raises(ConfigError, match="--task"):
        prepare_source("folder", root)
    with pytest.raises(ConfigError, match="task id"):
        prepare_source("folder", root, task="bad id!")
    write(root / "masks" / "tumor" / "a1.png")
    with pytest.raises(DatasetError, match="2 mask files"):
        prepare_source("folder", root, task="knee_mri")
    with pytest.raises(DatasetError, match="train/normal"):
        prepare_source("folder", tmp_path / "test", task="knee_mri")


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="known: headct"):
        prepare_source("nope", tmp_path)


# ---------------------------------------------------------------- manifests and prepare_all


def test_prepared_manifest_round_trips(tmp_path: Path) -> None:
    m = prepare_source("brain_tumor", make_brain(tmp_path / "brain"), seed=0)
    write_manifest(m, tmp_path / "m.csv")
    back = read_manifest(tmp_path / "m.csv")
    assert back.samples == m.samples and back.meta == m.meta and back.root == m.root


def test_prepare_all_maps_folders_to_tasks_and_prefers_paper_data(tmp_path: Path) -> None:
    make_headct(tmp_path / "headct")
    make_busi(tmp_path / "busi")
    make_chest(tmp_path / "chest_xray")
    make_rsna(tmp_path / "rsna", images=False)
    make_eye(tmp_path / "eye_diseases")
    write_split(tmp_path / "lag", {"train/0": [], "test/0": [], "test/1": []})
    found = prepare_all(tmp_path, seed=0)
    assert set(found) == {"head_ct", "breast_us", "chest_xray", "fundus"}
    assert found["chest_xray"].meta["source"] == "chest_xray"  # rsna has no images
    assert found["fundus"].meta["source"] == "eye_diseases"
    for task, manifest in found.items():
        assert {s.task for s in manifest.samples} == {task}
    make_rsna(tmp_path / "rsna", images=True)
    assert prepare_all(tmp_path)["chest_xray"].meta["source"] == "rsna"
    assert prepare_all(tmp_path, prefer_paper=False)["chest_xray"].meta["source"] == "chest_xray"
    assert set(TASK_SOURCES) == {"chest_xray", "brain_mri", "fundus", "breast_us", "head_ct"}


def test_prepare_all_reports_broken_and_empty_roots(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="holds none"):
        prepare_all(tmp_path)
    (tmp_path / "busi").mkdir()
    with pytest.raises(DatasetError, match="busi"):
        prepare_all(tmp_path)


# ---------------------------------------------------------------- CLI


def test_cli_prepare_summary_and_sources(tmp_path: Path) -> None:
    runner = CliRunner()
    root = make_brain(tmp_path / "brain")
    out = tmp_path / "out" / "brain.csv"
    result = runner.invoke(app, ["prepare", "brain_tumor", "--root", str(root), "--out", str(out), "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "train incl. val 7, test normal 6, test abnormal 6" in result.output
    assert "unresolved: 3" in result.output and "Tr-no_1011.jpg" in result.output
    assert read_manifest(out).meta["seed"] == "2"

    busi = tmp_path / "busi.csv"
    result = runner.invoke(app, ["prepare", "busi", "--root", str(make_busi(tmp_path / "b")), "--out", str(busi)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "summary", str(out), str(busi)])
    assert result.exit_code == 0, result.output
    assert "dup_of_train" in result.output and "label_conflict" in result.output
    assert "breast_us: train incl. val 6, test normal 2, test abnormal 5" in result.output

    eye = tmp_path / "eye.csv"
    assert runner.invoke(app, ["prepare", "eye_diseases", "--root", str(make_eye(tmp_path / "e")),
                               "--out", str(eye)]).exit_code == 0
    result = runner.invoke(app, ["data", "summary", str(eye)])
    assert "test normal 25, test abnormal 4 (2 without other_source)" in result.output

    result = runner.invoke(app, ["data", "sources"])
    assert result.exit_code == 0
    for name in SOURCES:
        assert name in result.output


def test_cli_errors_are_medmoe_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "headct", "--root", str(tmp_path / "x"), "--out", str(tmp_path / "m.csv")])
    assert isinstance(result.exception, DatasetError)
    assert not (tmp_path / "m.csv").exists()
    result = runner.invoke(app, ["prepare", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv")])
    assert isinstance(result.exception, ConfigError)
