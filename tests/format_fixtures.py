"""Bring-your-own-data fixtures in the new formats, from the real rows and posters of the bundled sample
(tests/ingest_fixtures.py): the same users, items and times written as an ML-100K-shaped CSV, a RecBole
`.inter`/`.item` pair and an Amazon Reviews 2023 / 2018 jsonl pair.

    root = write_ml100k_csv(tmp_path / "ml100k")     # u.csv (user_id,movie_id,rating,unix_timestamp) + u.item.csv
    root = write_recbole(tmp_path / "rb")            # ml-100k.inter + ml-100k.item + images/
    root = write_amazon_2023(tmp_path / "amz")       # Beauty.jsonl.gz + meta_Beauty.jsonl.gz + images/
"""

import gzip
import json
import shutil
from pathlib import Path

from ingest_fixtures import POSTERS, USERS, copy_images, csv_line, items_of, movies, rows_of, write_text

ML100K_PARAMS = {
    "format": "csv",
    "interactions_file": "u.csv",
    "titles_file": "u.item.csv",
    "image_dir": "posters",
    "interactions": {
        "columns": {"user": "user_id", "item": "movie_id", "timestamp": "unix_timestamp", "rating": "rating"}
    },
    "titles": {"columns": {"item": "movie_id", "title": "movie_title", "image": "poster"}},
}


def asin(movie_id: str) -> str:
    return f"B{int(movie_id):09d}"


def write_ml100k_csv(root: Path, users: tuple[str, ...] = USERS, extra_ratings: list[str] = ()) -> Path:
    items = items_of(users)
    write_text(
        root / "u.csv", ["user_id,movie_id,rating,unix_timestamp", *map(",".join, rows_of(users)), *extra_ratings]
    )
    write_text(
        root / "u.item.csv",
        ["movie_id,movie_title,poster", *(csv_line([i, movies()[i][0], f"{i}.jpg"]) for i in items)],
    )
    copy_images(root, "posters", items)
    return root


def write_recbole(root: Path, users: tuple[str, ...] = USERS, extra_inter: list[str] = ()) -> Path:
    items = items_of(users)
    write_text(
        root / "ml-100k.inter",
        [
            "user_id:token\titem_id:token\trating:float\ttimestamp:float",
            *(f"{u}\t{i}\t{r}\t{t}.0" for u, i, r, t in rows_of(users)),
            *extra_inter,
        ],
    )
    write_text(
        root / "ml-100k.item",
        [
            "item_id:token\tmovie_title:token_seq\tclass:token_seq",
            *(f"{i}\t{movies()[i][0]}\t{movies()[i][1].replace('|', ' ')}" for i in items),
        ],
    )
    copy_images(root, "images", items)
    return root


def jsonl_gz(path: Path, records: list, extra: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records] + list(extra)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def write_amazon_2023(
    root: Path, users: tuple[str, ...] = USERS, extra_reviews: list[str] = (), base_url: str = "http://127.0.0.1:9/img"
) -> Path:
    items = items_of(users)
    reviews = [
        {
            "rating": float(r),
            "title": "ok",
            "text": "nice",
            "images": [],
            "asin": asin(i) + "V",
            "parent_asin": asin(i),
            "user_id": f"AU{u}",
            "timestamp": int(t) * 1000,
            "helpful_vote": 0,
            "verified_purchase": True,
        }
        for u, i, r, t in rows_of(users)
    ]
    meta = [
        {
            "main_category": "All Beauty",
            "title": movies()[i][0],
            "average_rating": 4.0,
            "rating_number": 3,
            "images": [
                {"thumb": f"{base_url}/{i}_t.jpg", "large": f"{base_url}/{i}.jpg", "variant": "MAIN", "hi_res": None}
            ],
            "parent_asin": asin(i),
        }
        for i in items
    ]
    jsonl_gz(root / "Beauty.jsonl.gz", reviews, extra_reviews)
    jsonl_gz(root / "meta_Beauty.jsonl.gz", meta)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in items:
        shutil.copyfile(POSTERS / f"{i}.jpg", root / "images" / f"{asin(i)}.jpg")
    return root


def write_amazon_2018(root: Path, users: tuple[str, ...] = USERS) -> Path:
    items = items_of(users)
    reviews = [
        {
            "overall": float(r),
            "verified": True,
            "reviewTime": "09 13, 2009",
            "reviewerID": f"A{u}",
            "asin": asin(i),
            "unixReviewTime": int(t),
            "reviewText": "fine",
        }
        for u, i, r, t in rows_of(users)
    ]
    meta = [
        {
            "title": movies()[i][0],
            "asin": asin(i),
            "imageURL": [f"http://x/{i}_s.jpg"],
            "imageURLHighRes": [f"http://x/{i}.jpg"],
        }
        for i in items
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "Beauty.json").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    jsonl_gz(root / "meta_Beauty.json.gz", meta)
    return root
