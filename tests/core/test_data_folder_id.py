"""The data folder's id: one per folder, whoever asks first and however many ask at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from core.settings import FOLDER_ID_FILE, data_folder_id


def _ask_after(start: threading.Barrier) -> str:
    start.wait()
    return data_folder_id()


def test_threads_asking_at_once_in_a_new_folder_all_get_the_id_it_keeps(tmp_path, monkeypatch):
    # The stage tasks of a first run ask from their threads at the same moment; a key made
    # from an id the folder does not keep is a cached result no later run finds.
    threads = 8
    for attempt in range(40):
        folder = tmp_path / str(attempt)
        monkeypatch.setenv("NVRFLOW_DATA", str(folder))
        start = threading.Barrier(threads)
        with ThreadPoolExecutor(threads) as pool:
            ids = set(pool.map(_ask_after, [start] * threads))
        kept = (folder / FOLDER_ID_FILE).read_text().strip()
        assert ids == {kept}, f"attempt {attempt}: threads got {sorted(ids)}, the folder keeps {kept!r}"
        assert sorted(p.name for p in folder.iterdir()) == [FOLDER_ID_FILE]


def test_folders_get_different_ids_and_keep_them(tmp_path, monkeypatch):
    ids = []
    for name in ("a", "b"):
        monkeypatch.setenv("NVRFLOW_DATA", str(tmp_path / name))
        ids.append(data_folder_id())
        assert data_folder_id() == ids[-1]
    assert ids[0] != ids[1] and all(len(i) == 32 for i in ids)
