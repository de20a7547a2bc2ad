import json

import numpy as np
import pytest

from grmp_iqa_hf.data.splits import (
    Split,
    load_splits,
    make_splits,
    save_splits,
    splits_from_columns,
    splits_to_columns,
)


@pytest.fixture(scope="module")
def grouped_ds():
    datasets = pytest.importorskip("datasets")
    n_ref, n_dist = 29, 10  # LIVE-like: distorted versions of reference images
    refs = [f"ref{r:02d}" for r in range(n_ref) for _ in range(n_dist)]
    names = [f"img{i:04d}.bmp" for i in range(len(refs))]
    return datasets.Dataset.from_dict({"image_name": names, "ref": refs})


def _check_partition(split, n):
    for part in ("train", "val", "test"):
        arr = split[part]
        assert arr.dtype == np.int64
        assert np.all(np.diff(arr) > 0)  # sorted, unique
        assert arr.size == 0 or (arr.min() >= 0 and arr.max() < n)
    assert np.intersect1d(split.train, split.test).size == 0
    assert np.intersect1d(split.val, split.test).size == 0
    assert np.intersect1d(split.val, split.train).size == 0


def test_basic_ratio_and_disjoint():
    splits = make_splits(1000)
    assert len(splits) == 10
    for i, s in enumerate(splits):
        assert s.index == i
        _check_partition(s, 1000)
        assert s.train.size == 800 and s.test.size == 200 and s.val.size == 0
        assert np.union1d(s.train, s.test).size == 1000


def test_deterministic():
    a = make_splits(500, seed=7)
    b = make_splits(500, seed=7)
    c = make_splits(500, seed=8)
    assert all(x == y for x, y in zip(a, b))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.train, y.train)
        np.testing.assert_array_equal(x.test, y.test)
    assert any(x != y for x, y in zip(a, c))


def test_splits_differ():
    splits = make_splits(500, num_splits=10)
    tests = {tuple(s.test.tolist()) for s in splits}
    assert len(tests) == 10


def test_split_independent_of_num_splits():
    few = make_splits(300, num_splits=3, seed=11, num_train=40, val_ratio=0.25)
    many = make_splits(300, num_splits=10, seed=11, num_train=40, val_ratio=0.25)
    for a, b in zip(few, many[:3]):
        assert a == b


def test_group_by_ref(grouped_ds):
    n = len(grouped_ds)
    refs = np.asarray(grouped_ds["ref"][:])
    splits = make_splits(grouped_ds, group_by="ref", num_splits=10, seed=0)
    assert len({tuple(s.test.tolist()) for s in splits}) == 10
    for s in splits:
        _check_partition(s, n)
        train_refs, test_refs = set(refs[s.train]), set(refs[s.test])
        assert not (train_refs & test_refs)
        assert len(train_refs) == round(0.8 * 29)  # ratio applies to groups
        assert len(train_refs | test_refs) == 29
        assert s.train.size + s.test.size == n


def test_group_by_with_val_keeps_groups_apart(grouped_ds):
    refs = np.asarray(grouped_ds["ref"][:])
    for s in make_splits(grouped_ds, group_by="ref", val_ratio=0.2, num_splits=3):
        _check_partition(s, len(grouped_ds))
        groups = [set(refs[s.train]), set(refs[s.val]), set(refs[s.test])]
        assert groups[1] and not (groups[0] & groups[1]) and not (groups[1] & groups[2])


def test_group_by_errors(grouped_ds):
    with pytest.raises(KeyError, match="nope"):
        make_splits(grouped_ds, group_by="nope")
    with pytest.raises(ValueError, match="int"):
        make_splits(100, group_by="ref")


def test_group_by_label_sequence():
    labels = [i // 4 for i in range(40)]
    for s in make_splits(40, group_by=labels, num_splits=3):
        assert not ({labels[j] for j in s.train} & {labels[j] for j in s.test})


def test_num_train_exact_and_test_unchanged():
    full = make_splits(1000, seed=3)
    few = make_splits(1000, seed=3, num_train=50)
    for a, b in zip(full, few):
        assert b.train.size == 50
        assert np.isin(b.train, a.train).all()  # drawn from the pool
        np.testing.assert_array_equal(a.test, b.test)  # unused pool items not added
    with pytest.raises(ValueError, match="pool"):
        make_splits(100, num_train=81)


def test_num_train_nested():
    a = make_splits(1000, num_splits=2, num_train=25)
    b = make_splits(1000, num_splits=2, num_train=50)
    for x, y in zip(a, b):
        assert np.isin(x.train, y.train).all()


def test_val_inside_training_set():
    few = make_splits(1000, seed=5, num_train=50)
    with_val = make_splits(1000, seed=5, num_train=50, val_ratio=0.2)
    for a, s in zip(few, with_val):
        _check_partition(s, 1000)
        assert s.val.size == 10 and s.train.size == 40
        np.testing.assert_array_equal(np.union1d(s.train, s.val), a.train)
        np.testing.assert_array_equal(s.test, a.test)
    tiny = make_splits(1000, num_train=5, val_ratio=0.01, num_splits=1)[0]
    assert tiny.val.size == 1 and tiny.train.size == 4
    with pytest.raises(ValueError):
        make_splits(1000, num_train=1, val_ratio=0.5)


def test_train_fraction():
    full = make_splits(1000, seed=1, num_splits=3)
    half = make_splits(1000, seed=1, num_splits=3, train_fraction=0.5)
    for a, b in zip(full, half):
        assert b.train.size == 400
        assert np.isin(b.train, a.train).all()
        np.testing.assert_array_equal(a.test, b.test)
    with pytest.raises(ValueError, match="mutually exclusive"):
        make_splits(100, num_train=10, train_fraction=0.5)
    with pytest.raises(ValueError):
        make_splits(100, train_fraction=0.0)


def test_invalid_args():
    with pytest.raises(ValueError):
        make_splits(100, train_ratio=0.0)
    with pytest.raises(ValueError):
        make_splits(100, val_ratio=1.0)
    with pytest.raises(ValueError):
        make_splits(100, num_splits=0)
    with pytest.raises(ValueError):
        make_splits(0)


def test_split_mapping_and_to_dict():
    s = make_splits(20, num_splits=1, val_ratio=0.25)[0]
    assert set(s.keys()) == {"train", "val", "test"}
    assert s["train"] is s.train
    d = s.to_dict()
    assert d["index"] == 0 and isinstance(d["train"], list)
    json.dumps(d)
    assert sorted(d["train"] + d["val"] + d["test"]) == list(range(20))
    with pytest.raises(Exception):
        s.train = np.zeros(0)  # frozen
    with pytest.raises(ValueError):
        s.train[0] = 5  # read-only arrays
    with pytest.raises(ValueError, match="both"):
        Split(index=0, train=[1, 2], test=[2, 3])


def test_json_round_trip(tmp_path, grouped_ds):
    splits = make_splits(grouped_ds, group_by="ref", num_splits=3, val_ratio=0.1)
    ids = grouped_ds["image_name"][:]
    path = save_splits(splits, tmp_path / "splits.json", ids=ids)
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    assert set(raw) == {"0", "1", "2"}
    assert set(raw["0"]) == {"train", "val", "test"}
    assert all(isinstance(x, str) for x in raw["0"]["train"])
    assert load_splits(path, ids=ids) == splits
    # ids survive a re-ordering of the dataset
    rev = ids[::-1]
    loaded = load_splits(path, ids=rev)
    n = len(ids)
    for a, b in zip(splits, loaded):
        np.testing.assert_array_equal(np.sort(n - 1 - a.test), b.test)
    # unknown ids are named
    with pytest.raises(ValueError, match="img0000.bmp"):
        load_splits(path, ids=ids[1:])
    with pytest.raises(ValueError, match="ids="):
        load_splits(path)


def test_json_round_trip_indices(tmp_path):
    splits = make_splits(50, num_splits=4)
    path = save_splits(splits, str(tmp_path / "s.json"))
    assert load_splits(path) == splits
    # pyiqa-style content without "val"
    (tmp_path / "p.json").write_text(json.dumps({"0": {"train": [0, 1], "test": [2]}}))
    (s,) = load_splits(tmp_path / "p.json")
    assert s.val.size == 0 and s.test.tolist() == [2]


def test_columns_round_trip():
    splits = make_splits(60, num_splits=3, num_train=20, val_ratio=0.2)
    cols = splits_to_columns(splits, 60)
    assert list(cols) == ["split_0", "split_1", "split_2"]
    assert all(len(c) == 60 for c in cols.values())
    assert set(cols["split_0"]) == {"train", "val", "test", ""}
    assert cols["split_0"].count("train") == 16
    assert splits_from_columns({"image_name": ["x"] * 60, **cols}) == splits
    with pytest.raises(ValueError, match="invalid value"):
        splits_from_columns({"split_0": ["train", "bogus"]})
    with pytest.raises(ValueError):
        splits_to_columns(splits, 10)


def test_released_splits_reproduce_the_released_numpy_calls():
    """`--paper-mode` splits: the released finetune.py seeds numpy's global generator once (setup_seed(2024)),
    then per split shuffles the SAME index array again and draws N of the first 80% with np.random.choice."""
    from grmp_iqa_hf.evaluation.protocol import released_splits

    n, num_images = 627, 50
    ours = released_splits(n, num_images=num_images, num_splits=10, seed=2024)
    state = np.random.get_state()
    try:
        np.random.seed(2024)  # what the released setup_seed does to numpy
        ind = np.arange(0, n)
        for split in ours:
            np.random.shuffle(ind)
            cut = int(len(ind) * 0.8)
            train = np.random.choice(ind[:cut], size=num_images, replace=False)
            assert np.array_equal(split.train, np.sort(train))
            assert np.array_equal(split.test, np.sort(ind[cut:]))
    finally:
        np.random.set_state(state)
    assert len({tuple(s.test) for s in ours}) == 10  # the accumulated shuffles give 10 different test sets
    with pytest.raises(ValueError, match="pool has only"):
        released_splits(10, num_images=9)
