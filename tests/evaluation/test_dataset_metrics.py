"""Datasets (npy batches, single samples, image folders, labels files) and metrics against direct
computations on seeded random data."""

from __future__ import annotations

import numpy as np
import pytest

from engine.evaluation import DatasetError, Preprocess, evaluate_logits, load_samples, open_dataset
from engine.evaluation.metrics import topk_hits


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_npy_batches_and_single_samples_keep_their_order(tmp_path, rng):
    a, b, c = (rng.standard_normal((5, 3, 4, 4)).astype(np.float32), rng.standard_normal((3, 4, 4)).astype(np.float32),
               rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)  # one sample without its batch dimension
    np.save(tmp_path / "c.npy", c)
    spec = open_dataset(str(tmp_path), sample_ndim=3)
    assert spec.size == 8
    want = np.concatenate([a, b[None], c])
    np.testing.assert_array_equal(load_samples(spec, 0, 8), want)
    np.testing.assert_array_equal(load_samples(spec, 4, 7), want[4:7])
    assert spec.names()[5] == "b.npy[0]"


def test_labels_count_must_match_and_name_the_file(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((4, 2)).astype(np.float32))
    lab = tmp_path.parent / f"{tmp_path.name}_labels.npy"
    np.save(lab, np.arange(3))
    with pytest.raises(DatasetError, match="3 labels for 4 samples"):
        open_dataset(str(tmp_path), str(lab), sample_ndim=1)
    txt = tmp_path.parent / f"{tmp_path.name}_labels.txt"
    txt.write_text("1\n2\nx\n0\n")
    with pytest.raises(DatasetError, match="labels"):
        open_dataset(str(tmp_path), str(txt), sample_ndim=1)


def test_bad_npy_is_refused_by_name(tmp_path):
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(DatasetError, match="broken.npy"):
        open_dataset(str(tmp_path), sample_ndim=3)


def test_image_folder_with_class_subfolders_preprocesses_like_numpy(tmp_path, rng):
    pil = pytest.importorskip("PIL.Image")
    pixels = {}
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            px = rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
            pil.fromarray(px).save(tmp_path / cls / f"{i}.png")
            pixels[f"{cls}/{i}.png"] = px
    pp = Preprocess(crop=(4, 6), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    spec = open_dataset(str(tmp_path), preprocess=pp)
    assert spec.labels == (0, 0, 1, 1)
    got = load_samples(spec, 0, 4)
    for k, name in enumerate(spec.files):
        px = pixels[name].astype(np.float64)[1:5, 2:8] / 255.0  # center crop of 6x10 to 4x6
        want = ((px - [0.5, 0.4, 0.3]) / [0.2, 0.3, 0.4]).transpose(2, 0, 1)
        np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-6)


def test_flat_image_folder_takes_name_label_lines(tmp_path, rng):
    pil = pytest.importorskip("PIL.Image")
    for n in ("b.png", "a.png"):
        pil.fromarray(rng.integers(0, 256, size=(4, 4), dtype=np.uint8)).save(tmp_path / n)
    lab = tmp_path.parent / f"{tmp_path.name}.txt"
    lab.write_text("a.png 7\nb.png 3\n")
    spec = open_dataset(str(tmp_path), str(lab), preprocess=Preprocess(channels=1))
    assert spec.files == ("a.png", "b.png") and spec.labels == (7, 3)
    assert load_samples(spec, 0, 2).shape == (2, 1, 4, 4)


def test_topk_accuracy_agreement_and_confusion_match_direct_loops(rng):
    logits = rng.standard_normal((200, 7)).astype(np.float32)
    ref = logits + 0.3 * rng.standard_normal((200, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 200)
    res = evaluate_logits("x", logits, labels, (1, 3), ref, "ref", confusion=True, worst=4)
    top3 = np.mean([labels[i] in sorted(range(7), key=lambda c: -logits[i, c])[:3] for i in range(200)])
    assert res.topk[1] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert res.topk[3] == pytest.approx(top3)
    p = np.exp(ref.astype(np.float64))
    p /= p.sum(1, keepdims=True)
    q = np.exp(logits.astype(np.float64))
    q /= q.sum(1, keepdims=True)
    assert res.agreement.kl_mean == pytest.approx(np.mean(np.sum(p * np.log(p / q), 1)), rel=1e-9)
    assert res.agreement.same_top1 == pytest.approx(np.mean(ref.argmax(1) == logits.argmax(1)))
    assert res.confusion.sum() == 200 and np.trace(res.confusion) == np.sum(logits.argmax(1) == labels)
    nll = -np.log(q[np.arange(200), labels])
    assert [w["index"] for w in res.worst] == list(np.argsort(-nll)[:4])


def test_topk_ties_break_toward_the_lower_class():
    logits = np.array([[1.0, 1.0, 0.0]], np.float32)
    assert topk_hits(logits, np.array([0]), 1)[0] and not topk_hits(logits, np.array([1]), 1)[0]
