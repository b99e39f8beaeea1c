"""Axon Server's REST API on the real binary: the OpenAPI document is valid OpenAPI, and the
backup endpoints answer what Axon's backup procedure relies on (on a fresh store and on one
with closed segments after a restart)."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import zipfile

from openapi_spec_validator import validate

TIMEOUT_S = 10


def get(myelin, path: str):
    with urllib.request.urlopen(myelin.http_url + path, timeout=TIMEOUT_S) as response:
        return response.status, response.headers, response.read()


def get_json(myelin, path: str):
    status, _, body = get(myelin, path)
    assert status == 200, (path, status)
    return json.loads(body)


def test_openapi_document_is_valid_openapi(myelin):
    document = get_json(myelin, "/v3/api-docs")
    validate(document)
    for path in ("/v1/backup/filenames", "/v1/backup/eventstore", "/createControlDbBackup",
                 "/v1/backup/createControlDbBackup", "/v1/backup/log/filenames"):
        assert path in document["paths"], path
    status, _, body = get(myelin, "/swagger-ui/index.html")
    assert status == 200 and b"swagger" in body.lower()


def test_backup_eventstore_lists_active_segment_first_then_closed(myelin):
    answer = get_json(myelin, "/v1/backup/eventstore?targetContext=default&type=event")
    files = answer["filenames"]
    assert files[0].endswith(".events"), files
    assert os.path.isabs(files[0]) and os.path.exists(files[0]), files[0]
    closed = [f for f in files[1:] if f.endswith(".events")]
    numbers = [int(os.path.basename(f).split(".")[0]) for f in closed]
    assert numbers == sorted(numbers)
    if myelin.mode == "with-data":
        # Seeded beyond 1 MiB segments: some are closed.
        assert numbers, files
        assert answer["lastClosedSegment"] == numbers[-1]
    else:
        assert answer["lastClosedSegment"] == -1 and files == files[:1]
    for path in files:
        assert os.path.isabs(path) and os.path.exists(path), path
    # Incremental: strictly past the marker; the active segment is listed regardless.
    marker = answer["lastClosedSegment"]
    again = get_json(
        myelin,
        f"/v1/backup/eventstore?targetContext=default&type=EVENT&lastClosedSegmentBackedUp={marker}",
    )
    assert again["filenames"] == files[:1]


def test_backup_filenames_lists_closed_segments_with_index_files(myelin):
    files = get_json(myelin, "/v1/backup/filenames?context=default&type=EVENT&lastSegmentBackedUp=-1")
    data = [f for f in files if f.endswith(".events")]
    assert len(files) == 3 * len(data), files
    if myelin.mode == "with-data":
        assert data
        first = int(os.path.basename(data[0]).split(".")[0])
        after = get_json(myelin, f"/v1/backup/filenames?type=event&lastSegmentBackedUp={first}")
        assert data[0] not in after and all(f in files for f in after)
    unknown = get_json(myelin, "/v1/backup/filenames?context=nowhere&type=EVENT")
    assert unknown == []


def test_backup_bad_type_is_400_naming_the_parameter(myelin):
    try:
        get(myelin, "/v1/backup/eventstore?type=nonsense")
        raise AssertionError("expected 400")
    except urllib.error.HTTPError as error:
        assert error.code == 400
        body = json.loads(error.read())
        assert body["parameter"] == "type" and body["accepted"] == ["EVENT", "SNAPSHOT"]


def test_unknown_context_eventstore_is_503_with_axon_code(myelin):
    try:
        get(myelin, "/v1/backup/eventstore?targetContext=nowhere&type=EVENT")
        raise AssertionError("expected 503")
    except urllib.error.HTTPError as error:
        assert error.code == 503
        assert error.headers["AxonIQ-ErrorCode"] == "AXONIQ-6000"


def test_control_db_backup_is_a_zip_with_the_database(myelin):
    for path in ("/createControlDbBackup", "/v1/backup/createControlDbBackup"):
        request = urllib.request.Request(myelin.http_url + path, method="POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            location = response.read().decode()
        assert os.path.isabs(location) and re.fullmatch(r"controldb\d+\.zip", os.path.basename(location))
        with zipfile.ZipFile(location) as archive:
            assert set(archive.namelist()) == {"myelin-controldb.sqlite3", "descriptor.json"}
            descriptor = json.loads(archive.read("descriptor.json"))
            assert "default" in descriptor["lastTokens"]
        os.remove(location)
    assert get_json(myelin, "/v1/backup/log/filenames?context=default") == []
