"""Read one medical image file into a ``float32`` array in ``[0, 1]``.

Formats: PNG/JPEG/TIFF/BMP (Pillow), DICOM (pydicom) and NIfTI (nibabel)::

    from medmoe.io import read_image, read_dicom_tags, to_grayscale

    xray = read_image("chest.dcm")                          # (H, W), the file's own window
    ct = read_image("head.dcm", window="brain")             # 40 HU -> 0.5
    mri = read_image("brain.nii.gz", slice_index=77)        # one axial slice, radiological view
    fundus = read_image("eye.jpg")                          # (H, W, 3)
    gray = to_grayscale(fundus)                             # (H, W), BT.601 luma
    read_dicom_tags("chest.dcm")["Modality"]                # 'CR'
    planes("cine.dcm", frame="all")                         # [Plane(frame=0), Plane(frame=1), ...]

Every failure raises :class:`medmoe.errors.ImageReadError` naming the file, the cause and what to do.
"""

from medmoe.io.choice import Plane
from medmoe.io.dicom import read_dicom_tags
from medmoe.io.formats import SUPPORTED_SUFFIXES, file_suffix, is_dicom, is_image_file
from medmoe.io.intensity import WINDOW_PRESETS, to_grayscale
from medmoe.io.reader import count_planes, planes, read_image, read_plane, window_for

__all__ = [
    "SUPPORTED_SUFFIXES",
    "WINDOW_PRESETS",
    "Plane",
    "count_planes",
    "file_suffix",
    "is_dicom",
    "is_image_file",
    "planes",
    "read_dicom_tags",
    "read_image",
    "read_plane",
    "to_grayscale",
    "window_for",
]
