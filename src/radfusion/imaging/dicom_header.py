"""A DICOM file's header as the import uses it: a few attributes as plain values.

pydicom converts an element's value through its general machinery (value representations,
character sets, multi-values) when it is first read: for the score of attributes a CT slice's
import needs, that costs as much as decoding the slice's pixels. Their value representations
are fixed (UI, CS, IS, DS, US) and plain ASCII or binary, so they are read here straight from
the raw elements' bytes; an element pydicom has already converted is taken as it is.
"""

from __future__ import annotations

import functools

__all__ = ["HEADER_VR", "Header", "plain_header"]

#: The value representation of each header tag the import reads, for files with implicit VR.
HEADER_VR = {
    "SeriesInstanceUID": "UI",
    "StudyInstanceUID": "UI",
    "SOPClassUID": "UI",
    "Modality": "CS",
    "ImageType": "CS",
    "NumberOfFrames": "IS",
    "InstanceNumber": "IS",
    "ImagePositionPatient": "DS",
    "ImageOrientationPatient": "DS",
    "PixelSpacing": "DS",
    "RescaleSlope": "DS",
    "RescaleIntercept": "DS",
    "Rows": "US",
    "Columns": "US",
    "BitsAllocated": "US",
    "BitsStored": "US",
    "PixelRepresentation": "US",
    "SamplesPerPixel": "US",
}
#: Tags whose value is a list whatever its multiplicity.
MULTI_VALUED = {"ImageType", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"}


class Header(dict):
    """A file's header as plain values (str, int, float, lists of them) read straight from
    the elements' bytes: a CT slice's few attributes cost a fraction of pydicom's value
    conversion, and travel between processes as a small dict. ``get``, ``in`` and attribute
    access read like a pydicom Dataset's."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@functools.cache
def _header_tags() -> dict[str, int]:
    from pydicom.datadict import tag_for_keyword

    return {name: int(tag_for_keyword(name)) for name in HEADER_VR}


def _plain_value(element, name: str):
    """An element's value as plain Python: from its bytes while still raw (the usual case),
    else from pydicom's own conversion."""
    from pydicom.dataelem import RawDataElement
    from pydicom.multival import MultiValue

    if not isinstance(element, RawDataElement):
        value = element.value
        items = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    else:
        raw = element.value
        if raw is None:
            return None
        vr = HEADER_VR[name]
        if vr == "US":
            order = "little" if element.is_little_endian else "big"
            items = [int.from_bytes(raw[k : k + 2], order) for k in range(0, len(raw) - 1, 2)]
        else:
            text = raw.decode("ascii", "replace").strip("\x00 ")
            items = [part.strip(" \x00") for part in text.split("\\")] if text else []
    if not items:
        return None
    convert = {"DS": float, "IS": lambda v: int(float(v)), "US": int}.get(HEADER_VR[name], str)
    items = [convert(v) for v in items]
    return items if name in MULTI_VALUED else items[0]


def plain_header(ds) -> Header:
    """The header tags the import uses, as plain values; a value that does not parse is left
    out (and reported as missing where a series needs it)."""
    values = {}
    for name, tag in _header_tags().items():
        element = ds.get_item(tag, keep_deferred=True)
        if element is None:
            continue
        try:
            value = _plain_value(element, name)
        except (ValueError, TypeError):
            continue
        if value is not None:
            values[name] = value
    if "ModalityLUTSequence" in ds:
        values["ModalityLUTSequence"] = True
    if "PixelData" in ds:
        values["PixelData"] = True
    meta = getattr(ds, "file_meta", None)
    values["TransferSyntaxUID"] = str(meta.get("TransferSyntaxUID", "")) if meta else ""
    return Header(values)
