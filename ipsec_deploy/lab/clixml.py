"""CLIXML, the PowerShell serialization format of [MS-PSRP] 2.2.5, for the lab's PSRP server.

pypsrp 0.9.1 can only deserialize the messages a server sends, so the lab
decodes client messages (INIT_RUNSPACEPOOL, CREATE_PIPELINE, PIPELINE_INPUT)
with ``ClixmlDecoder`` into the plain values described in
``ipsec_deploy.lab.pipeline``. ``ClixmlEncoder`` writes the server's replies
the way PowerShell 5.1 does: ``RefId`` on every ``Obj``, a ``TN`` list the
first time a type-name list appears and ``TNRef`` after that.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import logging
import math
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.padding import PKCS7

from ipsec_deploy.lab.pipeline import ErrorRecordValue, PSObjectValue

log = logging.getLogger("ipsec_deploy.lab")

# [MS-PSRP] 2.2.5.1.x primitive type elements, decoded to Python values.
_INTEGER_TAGS = frozenset({"By", "SB", "U16", "I16", "U32", "I32", "U64", "I64"})
_FLOAT_TAGS = frozenset({"Sg", "Db"})
_TEXT_TAGS = frozenset({"S", "URI", "XD", "SBK", "Version", "DT", "TS", "G"})
_LIST_TAGS = ("LST", "IE", "QUE", "STK")

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# System.Management.Automation.ErrorCategory, in enum order (value = index).
ERROR_CATEGORIES = (
    "NotSpecified", "OpenError", "CloseError", "DeviceError", "DeadlockDetected",
    "InvalidArgument", "InvalidData", "InvalidOperation", "InvalidResult", "InvalidType",
    "MetadataError", "NotImplemented", "NotInstalled", "ObjectNotFound", "OperationStopped",
    "OperationTimeout", "SyntaxError", "ParserError", "PermissionDenied", "ResourceBusy",
    "ResourceExists", "ResourceUnavailable", "ReadError", "WriteError", "FromStdErr",
    "SecurityError", "ProtocolError", "ConnectionError", "AuthenticationError",
    "LimitsExceeded", "QuotaExceeded", "NotEnabled",
)  # fmt: skip

ARRAY_TYPE_NAMES = ["System.Object[]", "System.Array", "System.Object"]
HASHTABLE_TYPE_NAMES = ["System.Collections.Hashtable", "System.Object"]
SECURE_STRING_TYPE_NAMES = ["System.Security.SecureString", "System.Object"]
ERROR_RECORD_TYPE_NAMES = ["System.Management.Automation.ErrorRecord", "System.Object"]


class ClixmlError(ValueError):
    """Raised for CLIXML that the lab cannot decode."""


@dataclass(frozen=True)
class Tagged:
    """A primitive value that must be written with a given element, such as ``I64`` or ``Version``."""

    tag: str
    value: Any


@dataclass
class TypedList:
    """A list written with given type names, such as ``System.Version[]``."""

    items: list[Any]
    type_names: list[str]


@dataclass
class TypedDictionary:
    """A dictionary written with given type names and entries in the given order."""

    entries: list[tuple[Any, Any]]
    type_names: list[str]


# Characters that [MS-PSRP] 2.2.5.3.2 encodes as _xHHHH_: C0 and C1 controls and
# characters outside the Basic Multilingual Plane (as two UTF-16 surrogates).
_ESCAPED_CHARS = re.compile("[\u0000-\u001f\u007f-\u009f\U00010000-\U0010ffff]")
_ESCAPE_SEQUENCE = re.compile("_x([0-9A-Fa-f]{4})_")


def escape_string(text: str) -> str:
    """Encode a string for an ``<S>`` element, as PowerShell's serializer does."""

    def encode_char(match: re.Match[str]) -> str:
        utf16 = match.group(0).encode("utf-16-be")
        return "".join("_x%s_" % utf16[i : i + 2].hex().upper() for i in range(0, len(utf16), 2))

    # A literal "_x" must be escaped too, or the reader would take it for an escape.
    text = re.sub("(?i)_(x)", "_x005F_\\1", text)
    return _ESCAPED_CHARS.sub(encode_char, text)


def unescape_string(text: str | None) -> str:
    """Decode the _xHHHH_ escapes of an ``<S>`` element, joining UTF-16 surrogate pairs."""
    if not text:
        return ""

    units = bytearray()
    position = 0
    for match in _ESCAPE_SEQUENCE.finditer(text):
        units += text[position : match.start()].encode("utf-16-be", "surrogatepass")
        units += binascii.unhexlify(match.group(1))
        position = match.end()
    units += text[position:].encode("utf-16-be", "surrogatepass")
    return units.decode("utf-16-be", "surrogatepass")


def format_double(value: float) -> str:
    """Format a float as .NET's round-trip format does, with its names for infinities and NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


class SecureStringCipher:
    """AES-256-CBC with a zero IV, the session-key cipher of [MS-PSRP] 3.1.5.4.4, for SecureStrings."""

    def __init__(self, cipher: Cipher) -> None:
        self._cipher = cipher

    def decrypt(self, encoded: str) -> str:
        decryptor = self._cipher.decryptor()
        padded = decryptor.update(base64.b64decode(encoded)) + decryptor.finalize()
        unpadder = PKCS7(128).unpadder()
        return (unpadder.update(padded) + unpadder.finalize()).decode("utf-16-le")

    def encrypt(self, text: str) -> str:
        padder = PKCS7(128).padder()
        padded = padder.update(text.encode("utf-16-le")) + padder.finalize()
        encryptor = self._cipher.encryptor()
        return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


class ClixmlDecoder:
    """Decode one CLIXML document into the plain values of ``ipsec_deploy.lab.pipeline``.

    An ``Obj`` with a list (``LST``/``IE``/``QUE``/``STK``) becomes a ``list``,
    and one with ``DCT`` a ``dict``. An ``Obj`` that wraps a primitive and has
    no properties becomes that primitive, except an enum, which stays a
    ``PSObjectValue`` with ``value`` set. Any other object becomes a
    ``PSObjectValue`` whose properties are its ``Props`` then its ``MS`` members.
    """

    def __init__(self, cipher: SecureStringCipher | None = None) -> None:
        self._cipher = cipher
        self._objects: dict[str, Any] = {}
        self._type_names: dict[str, list[str]] = {}

    def decode_text(self, clixml: bytes | str) -> Any:
        if isinstance(clixml, bytes):
            clixml = clixml.decode("utf-8-sig")
        try:
            element = ET.fromstring(clixml)
        except ET.ParseError as error:
            raise ClixmlError("invalid CLIXML document: %s" % error) from error
        return self.decode(element)

    def decode(self, element: ET.Element) -> Any:
        tag = element.tag
        text = element.text

        if tag == "Nil":
            return None
        if tag == "B":
            return (text or "").strip().lower() == "true"
        if tag in _INTEGER_TAGS:
            return int(text or "0")
        if tag in _FLOAT_TAGS:
            return float((text or "0").replace("Infinity", "inf"))
        if tag == "D":
            return float(decimal.Decimal(text or "0"))
        if tag in _TEXT_TAGS:
            return unescape_string(text)
        if tag == "C":
            return chr(int(text or "0"))
        if tag == "BA":
            return base64.b64decode(text or "")
        if tag == "SS":
            return self._decode_secure_string(text or "")
        if tag == "Ref":
            return self._objects[element.attrib["RefId"]]
        if tag == "Obj":
            return self._decode_object(element)
        raise ClixmlError("unsupported CLIXML element <%s>" % tag)

    def _decode_secure_string(self, text: str) -> Any:
        if self._cipher is not None:
            try:
                return self._cipher.decrypt(text)
            except ValueError:
                log.warning("could not decrypt a SecureString with the session key; passing it on encrypted")
        # NOTE: without the session key the handler gets a placeholder object, not the text.
        return PSObjectValue(list(SECURE_STRING_TYPE_NAMES), to_string="System.Security.SecureString")

    def _read_type_names(self, element: ET.Element) -> list[str]:
        type_list = element.find("TN")
        if type_list is not None:
            names = [unescape_string(t.text) for t in type_list.findall("T")]
            self._type_names[type_list.attrib.get("RefId", "")] = names
            return names

        type_ref = element.find("TNRef")
        if type_ref is not None:
            return list(self._type_names.get(type_ref.attrib["RefId"], []))
        return []

    def _decode_object(self, element: ET.Element) -> Any:
        ref_id = element.attrib.get("RefId")
        type_names = self._read_type_names(element)

        for list_tag in _LIST_TAGS:
            items = element.find(list_tag)
            if items is not None:
                values: list[Any] = []
                self._remember(ref_id, values)
                values.extend(self.decode(child) for child in items)
                return values

        entries = element.find("DCT")
        if entries is not None:
            table: dict[Any, Any] = {}
            self._remember(ref_id, table)
            for entry in entries.findall("En"):
                key = self._decode_named(entry, "Key")
                table[key if _is_hashable(key) else str(key)] = self._decode_named(entry, "Value")
            return table

        result = PSObjectValue(type_names=type_names)
        self._remember(ref_id, result)

        has_properties = False
        for child in element:
            if child.tag == "ToString":
                result.to_string = unescape_string(child.text)
            elif child.tag in ("Props", "MS"):
                has_properties = has_properties or len(child) > 0
                for member in child:
                    result.properties[member.attrib.get("N", "")] = self.decode(member)
            elif child.tag not in ("TN", "TNRef"):
                result.value = self.decode(child)

        is_enum = "System.Enum" in type_names
        if result.value is not None and not has_properties and not is_enum:
            self._remember(ref_id, result.value)
            return result.value
        return result

    def _decode_named(self, entry: ET.Element, name: str) -> Any:
        for child in entry:
            if child.attrib.get("N") == name:
                return self.decode(child)
        return None

    def _remember(self, ref_id: str | None, value: Any) -> None:
        if ref_id is not None:
            self._objects[ref_id] = value


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class ClixmlEncoder:
    """Encode Python values as CLIXML elements, numbering ``Obj`` RefIds and ``TN`` lists per document."""

    def __init__(self, cipher: SecureStringCipher | None = None) -> None:
        self._cipher = cipher
        self._next_object_id = 0
        self._type_list_ids: dict[tuple[str, ...], int] = {}

    def encode(self, value: Any, name: str | None = None) -> ET.Element:
        element = self._encode(value)
        if name is not None:
            # PowerShell writes N before RefId, so rebuild the attribute order.
            attributes = {"N": name, **element.attrib}
            element.attrib.clear()
            element.attrib.update(attributes)
        return element

    def message(self, members: list[tuple[str, Any]]) -> ET.Element:
        """Build the ``<Obj><MS>`` envelope of a PSRP message from (name, value) members."""
        element = self._new_object()
        extended = ET.SubElement(element, "MS")
        for member_name, member_value in members:
            extended.append(self.encode(member_value, member_name))
        return element

    def _encode(self, value: Any) -> ET.Element:
        if isinstance(value, ET.Element):
            return value
        if isinstance(value, Tagged):
            return self._encode_tagged(value)

        primitive = _encode_primitive(value)
        if primitive is not None:
            return primitive

        if isinstance(value, PSObjectValue):
            return self._encode_ps_object(value)
        if isinstance(value, ErrorRecordValue):
            return self.error_record(value)
        if isinstance(value, TypedList):
            return self._encode_list(value.items, value.type_names)
        if isinstance(value, TypedDictionary):
            return self._encode_dictionary(dict(value.entries), value.type_names)
        if isinstance(value, dict):
            return self._encode_dictionary(value, HASHTABLE_TYPE_NAMES)
        if isinstance(value, (list, tuple)):
            return self._encode_list(value, ARRAY_TYPE_NAMES)
        raise ClixmlError("cannot serialize a value of type %s" % type(value).__name__)

    def _encode_tagged(self, value: Tagged) -> ET.Element:
        if value.value is None:
            return ET.Element("Nil")
        if value.tag == "SS":
            if self._cipher is None:
                raise ClixmlError("cannot serialize a SecureString before the session key exchange")
            return _primitive("SS", self._cipher.encrypt(str(value.value)))
        if value.tag == "B":
            return _primitive("B", "true" if value.value else "false")
        if value.tag in ("S", "URI", "XD", "SBK"):
            return _primitive(value.tag, escape_string(str(value.value)))
        return _primitive(value.tag, str(value.value))

    def _new_object(self) -> ET.Element:
        element = ET.Element("Obj", RefId=str(self._next_object_id))
        self._next_object_id += 1
        return element

    def _add_type_names(self, element: ET.Element, type_names: list[str]) -> None:
        if not type_names:
            return
        key = tuple(type_names)
        known_id = self._type_list_ids.get(key)
        if known_id is not None:
            ET.SubElement(element, "TNRef", RefId=str(known_id))
            return

        type_list_id = len(self._type_list_ids)
        self._type_list_ids[key] = type_list_id
        type_list = ET.SubElement(element, "TN", RefId=str(type_list_id))
        for type_name in type_names:
            ET.SubElement(type_list, "T").text = escape_string(type_name)

    def _encode_list(self, values: list[Any] | tuple[Any, ...], type_names: list[str]) -> ET.Element:
        element = self._new_object()
        self._add_type_names(element, type_names)
        items = ET.SubElement(element, "LST")
        for item in values:
            items.append(self._encode(item))
        return element

    def _encode_dictionary(self, values: dict[Any, Any], type_names: list[str]) -> ET.Element:
        element = self._new_object()
        self._add_type_names(element, type_names)
        entries = ET.SubElement(element, "DCT")
        for key, item in values.items():
            entry = ET.SubElement(entries, "En")
            entry.append(self.encode(key, "Key"))
            entry.append(self.encode(item, "Value"))
        return element

    def _encode_ps_object(self, value: PSObjectValue) -> ET.Element:
        element = self._new_object()
        self._add_type_names(element, value.type_names)
        if value.to_string is not None:
            ET.SubElement(element, "ToString").text = escape_string(value.to_string)
        if value.value is not None:
            element.append(self._encode(value.value))
        if value.properties:
            adapted = ET.SubElement(element, "Props")
            for property_name, property_value in value.properties.items():
                adapted.append(self.encode(property_value, property_name))
        return element

    def error_record(self, record: ErrorRecordValue) -> ET.Element:
        """Encode an ErrorRecord ([MS-PSRP] 2.2.3.15) without invocation info, as SerializeExtendedInfo=false."""
        element = self._new_object()
        self._add_type_names(element, ERROR_RECORD_TYPE_NAMES)
        ET.SubElement(element, "ToString").text = escape_string(record.message)

        category = record.category if record.category in ERROR_CATEGORIES else "NotSpecified"
        reason = record.reason or record.exception_type.rsplit(".", 1)[-1]
        target_type = "String" if record.target_name else ""
        category_message = "%s: (%s:%s) [%s], %s" % (
            category,
            ellipsize(record.target_name),
            target_type,
            record.command_name,
            reason,
        )

        members: list[tuple[str, Any]] = [
            ("Exception", self._exception(record)),
            ("TargetObject", record.target_name or None),
            ("FullyQualifiedErrorId", record.fully_qualified_error_id),
            ("InvocationInfo", None),
            ("ErrorCategory_Category", ERROR_CATEGORIES.index(category)),
            ("ErrorCategory_Activity", record.command_name),
            ("ErrorCategory_Reason", reason),
            ("ErrorCategory_TargetName", record.target_name),
            ("ErrorCategory_TargetType", target_type),
            ("ErrorCategory_Message", category_message),
            ("SerializeExtendedInfo", False),
        ]
        extended = ET.SubElement(element, "MS")
        for member_name, member_value in members:
            extended.append(self.encode(member_value, member_name))
        return element

    def _exception(self, record: ErrorRecordValue) -> ET.Element:
        exception_types = [record.exception_type]
        for base_type in ("System.SystemException", "System.Exception", "System.Object"):
            if base_type not in exception_types:
                exception_types.append(base_type)

        element = self._new_object()
        self._add_type_names(element, exception_types)
        ET.SubElement(element, "ToString").text = escape_string("%s: %s" % (record.exception_type, record.message))

        adapted = ET.SubElement(element, "Props")
        adapted.append(self.encode(record.message, "Message"))
        data = self._encode_dictionary({}, ["System.Collections.ListDictionaryInternal", "System.Object"])
        adapted.append(self.encode(data, "Data"))
        for empty_property in ("InnerException", "TargetSite", "StackTrace", "HelpLink", "Source"):
            adapted.append(self.encode(None, empty_property))
        # COR_E_SYSTEM, the HResult that PowerShell's own exceptions carry.
        adapted.append(self.encode(-2146233087, "HResult"))
        return element


def _encode_primitive(value: Any) -> ET.Element | None:
    """Encode a Python scalar as its primitive element, or return None for anything else."""
    if value is None:
        return ET.Element("Nil")
    if isinstance(value, bool):
        return _primitive("B", "true" if value else "false")
    if isinstance(value, int):
        return _primitive(_integer_tag(value), str(value))
    if isinstance(value, float):
        return _primitive("Db", format_double(value))
    if isinstance(value, decimal.Decimal):
        return _primitive("D", str(value))
    if isinstance(value, str):
        return _primitive("S", escape_string(value))
    if isinstance(value, (bytes, bytearray)):
        return _primitive("BA", base64.b64encode(bytes(value)).decode("ascii"))
    if isinstance(value, uuid.UUID):
        return _primitive("G", str(value))
    if isinstance(value, datetime.datetime):
        # MS-PSRP 2.2.5.1.4: DateTime as an XML Schema dateTime.
        return _primitive("DT", value.isoformat())
    return None


def _primitive(tag: str, text: str) -> ET.Element:
    element = ET.Element(tag)
    element.text = text
    return element


def _integer_tag(value: int) -> str:
    if INT32_MIN <= value <= INT32_MAX:
        return "I32"
    if INT64_MIN <= value <= INT64_MAX:
        return "I64"
    if 0 <= value < 2**64:
        return "U64"
    raise ClixmlError("integer %d does not fit in a 64-bit .NET integer" % value)


def ellipsize(text: str) -> str:
    """Shorten a target name as ErrorCategoryInfo.GetMessage does: 15 characters, "...", the last 15."""
    if len(text) <= 40:
        return text
    return text[:15] + "..." + text[-15:]


def to_bytes(element: ET.Element, byte_order_mark: bool = False) -> bytes:
    """Serialize an element as the UTF-8 CLIXML body of a PSRP message."""
    body = ET.tostring(element, encoding="unicode", short_empty_elements=True).encode("utf-8")
    return (b"\xef\xbb\xbf" + body) if byte_order_mark else body

