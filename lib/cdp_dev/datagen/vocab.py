"""Chinese vocabularies for the data generator: names with pinyin, regions with real 身份证 area codes, stores, pages."""

from __future__ import annotations

from typing import NamedTuple


class City(NamedTuple):
    name: str
    area_codes: tuple[str, ...]  # real GB/T 2260 district codes, used as 身份证 prefixes


class Province(NamedTuple):
    name: str
    short: str  # how many systems write it: 广东 instead of 广东省
    weight: int  # rough share of customers
    cities: tuple[City, ...]


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """Parse "王:wang 李:li" into (hanzi, pinyin) pairs."""
    return tuple(tuple(item.split(":")) for item in text.split())  # type: ignore[misc]


# Ordered by frequency so rank-based weights stay realistic; two compound surnames keep the parser honest.
SURNAMES = _pairs(
    "王:wang 李:li 张:zhang 刘:liu 陈:chen 杨:yang 黄:huang 赵:zhao 吴:wu 周:zhou "
    "徐:xu 孙:sun 马:ma 朱:zhu 胡:hu 郭:guo 何:he 高:gao 林:lin 罗:luo "
    "郑:zheng 梁:liang 谢:xie 宋:song 唐:tang 许:xu 韩:han 冯:feng 邓:deng 曹:cao "
    "彭:peng 曾:zeng 肖:xiao 田:tian 董:dong 袁:yuan 潘:pan 于:yu 蒋:jiang 蔡:cai "
    "余:yu 杜:du 叶:ye 程:cheng 苏:su 魏:wei 吕:lv 丁:ding 任:ren 沈:shen "
    "姚:yao 卢:lu 姜:jiang 崔:cui 钟:zhong 谭:tan 陆:lu 汪:wang 范:fan 金:jin "
    "石:shi 廖:liao 贾:jia 夏:xia 韦:wei 付:fu 方:fang 白:bai 邹:zou 孟:meng "
    "熊:xiong 秦:qin 邱:qiu 江:jiang 尹:yin 薛:xue 闫:yan 段:duan 雷:lei 侯:hou "
    "龙:long 史:shi 陶:tao 黎:li 贺:he 顾:gu 毛:mao 郝:hao 龚:gong 邵:shao "
    "欧阳:ouyang 上官:shangguan"
)

MALE_GIVEN = _pairs(
    "伟:wei 强:qiang 磊:lei 军:jun 勇:yong 杰:jie 涛:tao 斌:bin 超:chao 明:ming "
    "刚:gang 平:ping 辉:hui 鹏:peng 华:hua 飞:fei 鑫:xin 波:bo 宇:yu 浩:hao "
    "凯:kai 健:jian 俊:jun 帆:fan 帅:shuai 旭:xu 龙:long 阳:yang 建:jian 国:guo "
    "峰:feng 亮:liang 成:cheng 东:dong 志:zhi 海:hai 博:bo 轩:xuan 睿:rui 泽:ze "
    "昊:hao 翔:xiang 豪:hao 锋:feng 毅:yi 坤:kun 振:zhen 兵:bing 松:song 航:hang "
    "铭:ming 宏:hong 岩:yan 森:sen 洋:yang 栋:dong 荣:rong 诚:cheng 彬:bin 晖:hui "
    "永:yong 庆:qing 德:de 锦:jin 瑞:rui"
)

FEMALE_GIVEN = _pairs(
    "芳:fang 娜:na 敏:min 静:jing 丽:li 艳:yan 娟:juan 霞:xia 秀:xiu 玲:ling "
    "婷:ting 雪:xue 慧:hui 莹:ying 倩:qian 琳:lin 颖:ying 洁:jie 梅:mei 燕:yan "
    "萍:ping 红:hong 琴:qin 云:yun 兰:lan 凤:feng 欣:xin 悦:yue 怡:yi 晶:jing "
    "蓉:rong 薇:wei 菲:fei 璐:lu 瑶:yao 婧:jing 雯:wen 露:lu 茜:qian 梦:meng "
    "妍:yan 媛:yuan 馨:xin 诗:shi 涵:han 琪:qi 蕾:lei 萱:xuan 丹:dan 彤:tong "
    "桂:gui 春:chun 美:mei 玉:yu 珍:zhen 莉:li 淑:shu 婉:wan 菁:jing"
)

NEUTRAL_GIVEN = _pairs(
    "文:wen 晨:chen 然:ran 天:tian 家:jia 子:zi 智:zhi 林:lin 宁:ning 思:si "
    "雨:yu 晓:xiao 嘉:jia 安:an 乐:le 一:yi 可:ke 心:xin 若:ruo 佳:jia "
    "欢:huan 清:qing 新:xin 星:xing 艺:yi 鸿:hong 曦:xi 立:li 月:yue 晴:qing 诺:nuo 琛:chen"
)

GIVEN_FOR = {"M": MALE_GIVEN + NEUTRAL_GIVEN, "F": FEMALE_GIVEN + NEUTRAL_GIVEN}

# Characters people really mistype for each other when entering a receiver name.
_EXTRA_HOMOPHONES = (
    "伟玮炜维 静婧敬 丽莉俐 明铭鸣 华桦骅 杰洁捷 刚钢 军君均 勇永咏 磊蕾 涛韬 斌彬滨 "
    "娜纳 敏闽 婷庭 颖莹影 燕艳雁 红宏鸿 欣鑫馨新心 怡宜仪 晶菁精 雯文 梅玫 芳方 "
    "霞夏 琳林霖 玲铃 倩茜 峰锋丰 亮靓 辉晖徽 鹏朋 飞菲 宇雨语禹 浩昊皓豪 凯恺 "
    "健建剑 俊骏峻 帆凡 旭煦 阳洋杨 国帼 东冬 志智 博波 轩萱 睿瑞 泽择 翔祥 "
    "毅艺怡 坤昆 振震 松嵩 航杭 宏弘 岩炎 荣蓉 诚成城 德得 锦金 庆青清 春纯 美媚 "
    "玉钰 珍真 淑舒 婉宛 思斯 晓小 嘉佳家 安岸 乐悦 可珂 若偌 欢环 星醒 立丽力 月越 晴青 "
    "强蔷 超潮 帅率 龙隆珑 海孩 兵冰 森深 娟鹃涓 秀绣 云芸韵 兰岚澜 琪祺琦 丹聃 彤桐童 桂贵 "
    "然燃冉 子紫梓 宁凝柠 曦希熙 诺糯 张章 刘柳 黄皇 吴武 周舟 朱珠 胡湖 罗洛 郑正 曾增 苏素 钟忠 顾谷 毛茂"
)


def _homophone_index() -> dict[str, tuple[str, ...]]:
    """Map each name character to look-alike/sound-alike alternatives."""
    groups: dict[str, list[str]] = {}
    for hanzi, pinyin in SURNAMES + MALE_GIVEN + FEMALE_GIVEN + NEUTRAL_GIVEN:
        if len(hanzi) == 1:
            groups.setdefault(pinyin, []).append(hanzi)
    sets = list(groups.values()) + [list(g) for g in _EXTRA_HOMOPHONES.split()]
    index: dict[str, list[str]] = {}
    for group in sets:
        for char in group:
            alternatives = index.setdefault(char, [])
            alternatives.extend(c for c in group if c != char and c not in alternatives)
    return {char: tuple(alts) for char, alts in index.items() if alts}


HOMOPHONES = _homophone_index()


def _province(name: str, short: str, weight: int, *cities: tuple[str, str]) -> Province:
    return Province(name, short, weight, tuple(City(city, tuple(codes.split())) for city, codes in cities))


# Municipalities are their own single city, as exports write them (北京市/北京市); their districts only vary 身份证 prefixes.
PROVINCES = (
    _province("北京市", "北京", 7, ("北京市", "110101 110102 110105 110108")),
    _province("上海市", "上海", 7, ("上海市", "310101 310104 310105 310115")),
    _province("天津市", "天津", 2, ("天津市", "120101 120103 120104")),
    _province("重庆市", "重庆", 3, ("重庆市", "500103 500106 500107")),
    _province("广东省", "广东", 12, ("广州市", "440103 440104 440106"), ("深圳市", "440303 440304 440305"),
              ("佛山市", "440604 440605"), ("东莞市", "441900")),
    _province("浙江省", "浙江", 8, ("杭州市", "330102 330106 330108"), ("宁波市", "330203 330212"),
              ("温州市", "330302 330304")),
    _province("江苏省", "江苏", 8, ("南京市", "320102 320106"), ("苏州市", "320505 320508"),
              ("无锡市", "320211 320213")),
    _province("山东省", "山东", 7, ("济南市", "370102 370103"), ("青岛市", "370202 370203"),
              ("烟台市", "370602")),
    _province("四川省", "四川", 6, ("成都市", "510104 510105 510107"), ("绵阳市", "510703")),
    _province("河南省", "河南", 6, ("郑州市", "410102 410105"), ("洛阳市", "410302 410305")),
    _province("湖北省", "湖北", 5, ("武汉市", "420102 420106 420111"), ("宜昌市", "420502")),
    _province("湖南省", "湖南", 5, ("长沙市", "430102 430104"), ("株洲市", "430202")),
    _province("福建省", "福建", 4, ("福州市", "350102 350103"), ("厦门市", "350203 350206"),
              ("泉州市", "350502")),
    _province("河北省", "河北", 4, ("石家庄市", "130102 130104"), ("唐山市", "130202"), ("保定市", "130602")),
    _province("安徽省", "安徽", 4, ("合肥市", "340102 340104"), ("芜湖市", "340202")),
    _province("陕西省", "陕西", 3, ("西安市", "610102 610103 610113"), ("宝鸡市", "610302")),
    _province("辽宁省", "辽宁", 3, ("沈阳市", "210102 210103"), ("大连市", "210202 210204")),
    _province("江西省", "江西", 3, ("南昌市", "360102 360103"), ("赣州市", "360702")),
    _province("广西壮族自治区", "广西", 3, ("南宁市", "450102 450103"), ("桂林市", "450302")),
    _province("云南省", "云南", 2, ("昆明市", "530102 530103"), ("大理白族自治州", "532901")),
)

# (store_id, store_name, city): S + 2-digit city number + 2-digit store number.
STORES = (
    ("S0101", "上海南京西路店", "上海市"), ("S0102", "上海徐家汇店", "上海市"), ("S0103", "上海五角场店", "上海市"),
    ("S0201", "北京三里屯店", "北京市"), ("S0202", "北京西单店", "北京市"), ("S0203", "北京中关村店", "北京市"),
    ("S0301", "广州天河城店", "广州市"), ("S0302", "广州北京路店", "广州市"),
    ("S0401", "深圳万象城店", "深圳市"), ("S0402", "深圳海岸城店", "深圳市"),
    ("S0501", "杭州湖滨银泰店", "杭州市"), ("S0502", "杭州西溪印象城店", "杭州市"),
    ("S0601", "南京新街口店", "南京市"), ("S0701", "苏州观前街店", "苏州市"),
    ("S0801", "成都春熙路店", "成都市"), ("S0802", "成都太古里店", "成都市"),
    ("S0901", "武汉江汉路店", "武汉市"), ("S1001", "西安钟楼店", "西安市"),
    ("S1101", "重庆解放碑店", "重庆市"), ("S1201", "长沙五一广场店", "长沙市"),
    ("S1301", "厦门中山路店", "厦门市"), ("S1401", "青岛台东店", "青岛市"),
)

MOBILE_PREFIXES = tuple(
    [str(p) for p in range(130, 140)]
    + ["150", "151", "152", "153", "155", "156", "157", "158", "159"]
    + ["176", "177", "178"]
    + [str(p) for p in range(180, 190)]
    + ["198", "199"]
)

EMAIL_DOMAINS = ("qq.com", "163.com", "126.com", "gmail.com", "sina.com", "outlook.com")
EMAIL_DOMAIN_WEIGHTS = (40, 25, 10, 8, 7, 10)

PAYMENT_METHODS = ("微信支付", "支付宝", "银联", "现金")
PAYMENT_WEIGHTS = (45, 35, 12, 8)

# (appid, openid prefix): real openids share an app-specific prefix.
WECHAT_APPS = (("wx8a1b2c3d4e5f6a7b", "oX8a"), ("wx3c5e7f9a1b2d4c6e", "oXk2"))

SEARCH_KEYWORDS = ("连衣裙", "运动鞋", "防晒霜", "口红", "羽绒服", "卫衣", "面膜", "双肩包", "保温杯", "牛仔裤")

# event_type -> page templates; {id} is a goods id, {kw} a URL-encoded keyword, {aid} an activity id.
WECHAT_PAGES = {
    "page_view": (
        "/pages/index/index", "/pages/goods/detail?id={id}", "/pages/goods/detail?id={id}",
        "/pages/category/index", "/pages/search/result?kw={kw}", "/pages/activity/detail?aid={aid}",
        "/pages/member/center",
    ),
    "add_to_cart": ("/pages/goods/detail?id={id}",),
    "share": ("/pages/goods/detail?id={id}", "/pages/activity/detail?aid={aid}"),
    "coupon_claim": ("/pages/coupon/center", "/pages/activity/detail?aid={aid}"),
    "order_submit": ("/pages/order/confirm",),
    "login": ("/pages/member/login", "/pages/index/index"),
}
WECHAT_EVENT_TYPES = ("page_view", "add_to_cart", "share", "coupon_claim", "order_submit", "login")
WECHAT_EVENT_WEIGHTS = (55, 12, 6, 10, 7, 10)

APP_EVENT_TYPES = ("search", "product_view", "add_to_cart", "purchase", "app_open")
APP_EVENT_WEIGHTS = (18, 50, 17, 7, 8)

CONSENT_PURPOSES = ("marketing_sms", "marketing_email", "marketing_wechat", "ads_sync", "analytics")

# Relative activity by local hour 0..23: quiet nights, lunch bump, evening peak.
ONLINE_HOUR_WEIGHTS = (10, 5, 3, 2, 2, 3, 8, 20, 30, 40, 40, 40, 50, 45, 40, 40, 40, 45, 50, 60, 70, 70, 50, 30)
STORE_HOUR_WEIGHTS = (0,) * 10 + (20, 30, 45, 40, 35, 35, 40, 45, 50, 50, 40, 25) + (0, 0)
