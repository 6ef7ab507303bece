"""Names and mobile numbers of the people in a simulated district, drawn by index.

Surnames and given names of the residents' generation and of their children's (family,
grid workers, staff), and mobile numbers in the carriers' blocks: tables of text, and three
functions that draw from them with `simulator.rand`, so a person's name depends only on
(seed, stream, index).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lovekey.simulator import rand

# Names people of that generation carry; the residents are mostly women, as among elderly
# people who live alone.
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
    "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴孔"
)
_WOMEN = (
    "桂兰",
    "秀英",
    "淑珍",
    "玉兰",
    "凤英",
    "秀兰",
    "桂英",
    "淑兰",
    "玉珍",
    "桂芝",
    "凤兰",
    "秀珍",
    "素芬",
    "玉梅",
    "桂荣",
    "淑芬",
    "丽华",
    "秀云",
    "玉英",
    "桂珍",
    "淑华",
    "凤芝",
    "翠兰",
    "金凤",
)
_MEN = (
    "建国",
    "国华",
    "志刚",
    "德明",
    "振华",
    "福生",
    "长春",
    "宝山",
    "玉山",
    "文华",
    "永胜",
    "树林",
    "国庆",
    "洪亮",
    "金山",
    "德福",
    "学文",
    "春生",
    "广林",
    "殿臣",
    "振东",
    "凤山",
    "贵福",
    "庆祥",
)
_YOUNGER = (
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "磊",
    "洋",
    "艳",
    "勇",
    "军",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "霞",
    "丽",
    "强",
    "鹏",
    "辉",
    "红",
    "宇",
    "海燕",
    "晓东",
    "志强",
    "丽娜",
    "春梅",
    "海波",
    "建华",
    "雪",
)
# Mobile number blocks of the three carriers.
_MOBILE_PREFIXES = (
    "130",
    "131",
    "132",
    "133",
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "153",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "177",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "198",
    "199",
)


def people(seed: int, stream: str, index: npt.ArrayLike, *, women_share: float) -> list[str]:
    """Names of that generation, one per index."""
    u = rand.uniform(seed, f"name.{stream}", index, slots=3)
    surnames = np.array(list(_SURNAMES), dtype=object)[(u[:, 0] * len(_SURNAMES)).astype(np.intp)]
    women = np.array(_WOMEN, dtype=object)[(u[:, 2] * len(_WOMEN)).astype(np.intp)]
    men = np.array(_MEN, dtype=object)[(u[:, 2] * len(_MEN)).astype(np.intp)]
    given = np.where(u[:, 1] < women_share, women, men)
    return [a + b for a, b in zip(surnames.tolist(), given.tolist(), strict=True)]


def younger_people(seed: int, stream: str, index: npt.ArrayLike) -> list[str]:
    """Names of their children's generation (family, grid workers, staff)."""
    u = rand.uniform(seed, f"name.{stream}", index, slots=2)
    surnames = np.array(list(_SURNAMES), dtype=object)[(u[:, 0] * len(_SURNAMES)).astype(np.intp)]
    given = np.array(_YOUNGER, dtype=object)[(u[:, 1] * len(_YOUNGER)).astype(np.intp)]
    return [a + b for a, b in zip(surnames.tolist(), given.tolist(), strict=True)]


def mobiles(seed: int, stream: str, index: npt.ArrayLike) -> list[str]:
    """Mobile numbers in E.164 form (+86 and 11 digits), one per index."""
    bits = rand.keyed_u64(seed, f"phone.{stream}", index)
    which = (bits % np.uint64(len(_MOBILE_PREFIXES))).astype(np.intp)
    prefix = np.array(_MOBILE_PREFIXES, dtype=object)[which]
    line = ((bits >> np.uint64(8)) % np.uint64(100_000_000)).tolist()
    return [f"+86{p}{n:08d}" for p, n in zip(prefix.tolist(), line, strict=True)]
