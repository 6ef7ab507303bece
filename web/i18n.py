"""Chinese and English for the console: one catalogue, one choice per request.

The language is the staff member's stored preference, else the `lk_lang` cookie, else the
best match in the browser's Accept-Language, else `web.default_language`. Templates call
`_('key', name=value)`; a missing key shows as itself (a test keeps the two languages
complete), and times are shown in the district's time zone.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from jinja2 import Environment, pass_context
from jinja2.runtime import Context

from lovekey.config import Settings
from lovekey.vocabulary import Language

LANGUAGES: tuple[Language, ...] = tuple(Language)

# key: (English, Chinese)
CATALOGUE: dict[str, tuple[str, str]] = {
    "app_name": ("LoveKey console", "爱心钥匙工作台"),
    "nav_queue": ("Alerts", "告警"),
    "nav_residents": ("Residents", "老人"),
    "nav_devices": ("Devices", "设备"),
    "nav_reports": ("Reports", "报表"),
    "nav_audit": ("Audit log", "审计日志"),
    "sign_in": ("Sign in", "登录"),
    "sign_out": ("Sign out", "退出"),
    "signed_out": ("You have signed out.", "您已退出登录。"),
    "session_expired": ("Your session has expired. Please sign in again.", "登录已过期，请重新登录。"),
    "bad_login": ("Wrong user name or password.", "用户名或密码错误。"),
    "login_locked": ("Too many failed attempts. Try again later.", "失败次数过多，请稍后再试。"),
    "username": ("User name", "用户名"),
    "password": ("Password", "密码"),
    "role_grid_worker": ("Grid worker", "网格员"),
    "role_community_staff": ("Community staff", "社区工作人员"),
    "role_admin": ("Administrator", "管理员"),
    "back_to_queue": ("Back to the alerts", "返回告警列表"),
    "error_bad_request": ("The request was not understood.", "请求无效。"),
    "error_not_signed_in": ("Please sign in.", "请先登录。"),
    "error_forbidden": (
        "This action was refused (the form may be stale: reload the page).",
        "操作被拒绝（页面可能已过期，请刷新后重试）。",
    ),
    "error_not_found": ("Not found, or not in your area.", "未找到，或不在您的负责范围内。"),
    "error_method_not_allowed": ("That is not allowed here.", "不允许此操作。"),
    "error_conflict": ("That conflicts with the current state.", "与当前状态冲突。"),
    "error_invalid": ("Some input was not valid.", "输入无效。"),
    "error_too_many": ("Too many requests.", "请求过多。"),
    "error_error": ("Something went wrong.", "出错了。"),
    "notice_acknowledged": ("Acknowledged: you are handling this alert.", "已确认：由您处理此告警。"),
    "notice_already_acknowledged": ("Someone acknowledged this alert already.", "此告警已被他人确认。"),
    "notice_resolved": ("Resolved. Thank you.", "已处理完毕，谢谢。"),
    "notice_absence_set": ("Absence recorded.", "已登记外出。"),
    "notice_absence_cleared": ("Marked as home.", "已标记为在家。"),
    # queue
    "queue_title": ("Open alerts", "待处理告警"),
    "queue_empty": ("No open alerts in your area.", "您负责的范围内没有待处理告警。"),
    "kind": ("Kind", "类型"),
    "all_kinds": ("All kinds", "全部类型"),
    "filter": ("Filter", "筛选"),
    "kind_smoke": ("Smoke", "烟雾"),
    "kind_gas": ("Gas", "燃气"),
    "kind_sos": ("SOS button", "紧急呼叫"),
    "kind_low_usage": ("Low water use", "用水过少"),
    "kind_routine_break": ("Routine break", "作息异常"),
    "kind_running_tap": ("Running tap", "长流水"),
    "kind_leak": ("Leak", "漏水"),
    "kind_meter_silent": ("Silent meter", "水表失联"),
    "kind_gateway_offline": ("Gateway offline", "网关离线"),
    "status_open": ("Open", "新告警"),
    "status_notified": ("Notified", "已通知"),
    "status_acknowledged": ("Acknowledged", "已确认"),
    "status_resolved": ("Resolved", "已处理"),
    "status": ("Status", "状态"),
    "since": ("Since", "开始于"),
    "opened": ("Opened", "告警时间"),
    "acknowledged_by": ("Acknowledged by {who}, {when}", "{who}已确认，{when}"),
    "told_people": ("Told {n} people in {rounds} round(s)", "已通知{n}人（{rounds}轮）"),
    "nobody_told_yet": ("Nobody told yet", "尚未通知任何人"),
    "tier_0": ("Life safety", "生命安全"),
    "tier_1": ("Welfare", "生活异常"),
    "tier_2": ("Devices", "设备故障"),
    "showing": ("{first}–{last} of {total}", "第{first}–{last}条，共{total}条"),
    "pending_messages": ("{n} message(s) waiting", "{n}条消息待发送"),
    "acknowledge": ("Acknowledge", "确认处理"),
    "acknowledge_hint": (
        "Say that you are taking this alert: escalation stops.",
        "表示由您负责处理，升级通知将停止。",
    ),
    # alert page
    "resident": ("Resident", "老人"),
    "device": ("Device", "设备"),
    "gateway": ("Gateway", "网关"),
    "address": ("Address", "地址"),
    "acknowledged": ("Acknowledged", "已确认"),
    "resolved": ("Resolved", "已处理"),
    "next_escalation": ("Next escalation", "下次升级"),
    # the check-in stage (the resident asked first)
    "stage": ("Stage", "阶段"),
    "stage_check_in": ("Check-in: only the resident has been asked", "问询：仅询问了老人本人"),
    "check_in": ("Check-in", "问询老人"),
    "check_in_asked": ("asked", "询问于"),
    "check_in_waiting": ("no answer yet", "尚未回答"),
    "check_in_dry": ("dry for {minutes} min when asked", "询问时已{minutes}分钟未用水"),
    "check_in_answer_fine": ("answered: fine", "回答：平安"),
    "check_in_answer_need_help": ("answered: needs help", "回答：需要帮助"),
    "check_in_answer_none": ("no answer by the end of the check-in", "问询结束仍未回答"),
    "check_in_answer_unreachable": ("could not be reached", "无法联系到老人"),
    "details": ("Details", "详情"),
    "outcome": ("Outcome", "处理结果"),
    "outcomes": ("Outcomes", "处理结果"),
    "outcome_resident_ok": ("Resident is fine", "老人安好"),
    "outcome_needed_help": ("Needed help", "需要帮助"),
    "outcome_hospital": ("Taken to hospital", "送医"),
    "outcome_away": ("Resident was away", "老人外出"),
    "outcome_false_data": ("False data (device fault)", "数据有误（设备故障）"),
    "outcome_other": ("Other (say in the note)", "其他（请填写备注）"),
    "outcome_auto_cleared": ("Cleared by itself", "自动解除"),
    "note": ("Note", "备注"),
    "note_hint": ("What did you find?", "现场情况如何？"),
    "resolve": ("Resolve", "处理完毕"),
    "who_was_told": ("Who was told", "通知记录"),
    "round": ("Round", "轮次"),
    "recipient": ("Recipient", "接收人"),
    "role": ("Role", "角色"),
    "state": ("State", "状态"),
    "sent": ("Sent", "发送"),
    "attempts": ("Attempts", "尝试"),
    "history": ("History", "历史"),
    "contact_love_key_holder": ("Love-key holder", "爱心钥匙持有人"),
    "contact_family": ("Family", "家属"),
    "contact_grid_worker": ("Grid worker", "网格员"),
    "contact_community_staff": ("Community staff", "社区工作人员"),
    "contact_emergency": ("Emergency", "急救"),
    "contact_maintenance": ("Maintenance", "维修人员"),
    "contact_resident": ("Resident (check-in)", "老人本人（问询）"),
    # each notification: how it went, as the providers reported it (web/notifications.py)
    "channel": ("Channel", "渠道"),
    "channel_sms": ("SMS", "短信"),
    "channel_voice": ("Voice call", "语音电话"),
    "channel_push": ("App / push", "推送"),
    "message_id": ("Provider's id", "服务商编号"),
    "key": ("Key pressed", "按键"),
    "purpose_alert": ("alert", "告警"),
    "purpose_stand_down": ("stand-down", "解除通知"),
    "purpose_digest": ("digest", "日报"),
    "delivery_queued": ("queued", "排队中"),
    "delivery_accepted": ("accepted, no receipt yet", "已受理，暂无回执"),
    "delivery_delivered": ("delivered", "已送达"),
    "delivery_failed": ("failed", "发送失败"),
    "delivery_unanswered": ("call not answered", "电话未接听"),
    "delivery_answered": ("call answered", "电话已接听"),
    "delivery_cancelled": ("cancelled", "已取消"),
    "receipt_at": ("receipt", "回执"),
    "key_pressed": ("pressed {digit}", "按了{digit}"),
    "key_fine": ("I'm fine", "平安"),
    "key_going": ("I'm going", "我去看看"),
    "key_need_help": ("needs help", "需要帮助"),
    "key_not_a_choice": ("not one of the choices", "无效按键"),
    "check_in_stage": ("Check-in: the resident asked first", "问询：先询问老人本人"),
    "operator_errors_title": ("Provider settings need fixing", "短信/语音服务配置需要修正"),
    "operator_errors_hint": (
        "A provider refused a message because of the settings (a template or signature not"
        " approved, a template id missing). Another channel was tried where there was one;"
        " the administrator must fix the provider settings or the provider's console.",
        "服务商因配置问题拒绝发送（模板或签名未审核通过、缺少模板编号）。如有其他渠道已改用其他渠道；"
        "请管理员修正服务商配置或在服务商控制台处理。",
    ),
    "operator_errors_overview": (
        "Provider settings need fixing (last 24 hours)",
        "短信/语音服务配置需要修正（近24小时）",
    ),
    "operator_error_alerts": ("{n} alert(s), last {when}", "{n}条告警，最近一次{when}"),
    "operator_error_badge": ("provider settings error", "服务配置错误"),
    "undelivered": ("{n} message(s) not delivered", "{n}条消息未送达"),
    "fact_channel": ("channel", "渠道"),
    "fact_status": ("status", "状态"),
    "fact_code": ("code", "代码"),
    "fact_text": ("reason", "原因"),
    "fact_detail": ("reason", "原因"),
    "fact_key": ("key", "按键"),
    "fact_meaning": ("meaning", "含义"),
    "fact_role": ("role", "角色"),
    "fact_answer": ("answer", "回答"),
    "fact_reason": ("reason", "原因"),
    "fact_round": ("round", "轮次"),
    "fact_outcome": ("outcome", "结果"),
    # residents
    "search": ("Search", "搜索"),
    "search_hint": ("Name, id or address", "姓名、编号或地址"),
    "no_residents": ("No residents found.", "没有找到老人。"),
    "grid": ("Grid", "网格"),
    "community": ("Community", "社区"),
    "open_alerts": ("Open alerts", "待处理告警"),
    "previous": ("Previous", "上一页"),
    "next": ("Next", "下一页"),
    "resident_active": ("At home", "在家"),
    "resident_away": ("Away", "外出"),
    "resident_moved": ("Moved out", "已搬离"),
    "resident_deceased": ("Deceased", "已故"),
    "phone": ("Phone", "电话"),
    "language": ("Language", "语言"),
    "planned_absence": ("Planned absence", "外出登记"),
    "away_until": ("Away until {until}", "外出至{until}"),
    "not_away": ("Not marked away.", "未登记外出。"),
    "mark_home": ("Mark as home", "标记为在家"),
    "away_until_label": ("Away until", "外出至"),
    "reason": ("Reason", "原因"),
    "reason_hospital": ("In hospital", "住院"),
    "reason_family": ("Staying with family", "住在子女家"),
    "reason_travel": ("Travelling", "旅行"),
    "set_absence": ("Record absence", "登记外出"),
    "water_use_7d": ("Water use, last 7 days (litres per hour)", "近7天用水量（升/小时）"),
    "rule_explained": (
        "Low-use rule: under {min_l:g} L in {window_h} hours raises an alert.",
        "低用水规则：{window_h}小时内用水少于{min_l:g}升即告警。",
    ),
    "rule_line": ("Rule: {min_l:g} L / {window_h} h", "规则：{min_l:g}升/{window_h}小时"),
    "rule_below": ("Window below the rule", "低于规则的时段"),
    "litres_per_hour": ("Litres per hour", "升/小时"),
    "usage_total": (
        "{total} L used in 7 days; {below} hours with the window below the rule.",
        "7天共用水{total}升；{below}小时的窗口低于规则。",
    ),
    "no_readings": ("No readings in these 7 days.", "近7天没有读数。"),
    "contacts": ("Contacts", "联系人"),
    "name": ("Name", "姓名"),
    "no_contacts": ("No contacts.", "没有联系人。"),
    "devices": ("Devices", "设备"),
    "last_seen": ("Last seen", "最后上报"),
    "battery": ("Battery", "电池"),
    "health": ("Health", "状态"),
    "offline": ("offline", "离线"),
    "never": ("never", "从未"),
    "silent": ("Silent", "失联"),
    "low_battery": ("Low battery", "电量低"),
    "healthy": ("OK", "正常"),
    "no_devices": ("No devices.", "没有设备。"),
    "device_water_meter": ("Water meter", "水表"),
    "device_smoke": ("Smoke detector", "烟感"),
    "device_gas": ("Gas detector", "燃气报警器"),
    "device_sos_button": ("SOS button", "紧急按钮"),
    "device_away_button": ("Going-out button", "外出按钮"),
    "device_door_sensor": ("Door reminder", "外出提示器"),
    "alert_history": ("Alerts", "告警记录"),
    "no_alerts": ("No alerts.", "没有告警。"),
    "event_history": ("Device events, last 30 days", "设备事件（近30天）"),
    "time": ("Time", "时间"),
    "event": ("Event", "事件"),
    "event_smoke": ("Smoke", "烟雾"),
    "event_gas": ("Gas", "燃气"),
    "event_sos": ("SOS", "紧急呼叫"),
    "event_away": ("Going out", "外出"),
    "event_home": ("Back home", "回家"),
    "event_tamper": ("Tamper", "防拆"),
    "event_battery_low": ("Battery low", "电量低"),
    "event_passage": ("Someone at the door", "门口有人"),
    "event_left": ("Went out (door)", "出门"),
    "event_returned": ("Came back (door)", "回家"),
    "cleared": ("cleared", "已解除"),
    "no_events": ("No events.", "没有事件。"),
    # devices
    "device_health": ("Device health", "设备状态"),
    "by_community": ("By community", "按社区"),
    "meters": ("Meters", "水表"),
    "silent_meters": ("Silent meters", "失联水表"),
    "offline_gateways": ("Offline gateways", "离线网关"),
    "low_batteries": ("Low batteries", "低电量设备"),
    "offline_since": ("Offline since", "离线时长"),
    "never_heard": ("never heard from", "从未上线"),
    "none": ("None.", "无。"),
    # reports
    "months": ("Months", "月数"),
    "show": ("Show", "查看"),
    "export_csv": ("Export CSV", "导出CSV"),
    "alerts_per_kind": ("Alerts per month and kind", "每月各类告警数"),
    "time_to_ack": (
        "Time to acknowledge (minutes, median and 90th percentile)",
        "确认用时（分钟，中位数与90分位）",
    ),
    "false_alarm_rate": ("False alarms per household-month", "每户每月误报数"),
    "false_alarm_explained": (
        "False alarm: closed as resident fine, away, or false data.",
        "误报：处理结果为老人安好、外出或数据有误。",
    ),
    "by_community_month": ("By community and month", "按社区和月份"),
    "month": ("Month", "月份"),
    "households": ("Households", "户数"),
    "alerts": ("Alerts", "告警"),
    "ack_p50": ("Ack median (min)", "确认中位数（分钟）"),
    "ack_p90": ("Ack p90 (min)", "确认90分位（分钟）"),
    "false_alarms": ("False alarms", "误报"),
    # audit
    "action": ("Action", "操作"),
    "target": ("Target", "对象"),
    "from": ("From", "来源"),
}


def translate(lang: str, key: str, **values: Any) -> str:
    pair = CATALOGUE.get(key)
    if pair is None:
        return key
    text = pair[1] if lang == "zh" else pair[0]
    return text.format(**values) if values else text


def choose(preference: str | None, cookie: str | None, accept_language: str | None, *, default: str) -> str:
    """The first of: stored preference, cookie, best Accept-Language match, default."""
    for candidate in (preference, cookie):
        if candidate in LANGUAGES:
            return candidate
    return negotiate(accept_language, default=default)


def negotiate(accept_language: str | None, *, default: str) -> str:
    """`zh-CN,zh;q=0.9,en;q=0.8` -> 'zh'. Ties keep header order; q=0 is refused."""
    best: tuple[float, int, str] | None = None
    for index, part in enumerate((accept_language or "").split(",")):
        pieces = part.strip().split(";")
        tag = pieces[0].strip().lower()
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.split("-")[0]
        if primary not in LANGUAGES or quality <= 0:
            continue
        key = (-quality, index, primary)
        if best is None or key < best:
            best = key
    return best[2] if best else default


def install(env: Environment, settings: Settings) -> None:
    """Add `_` and the date filters to the console's template environment."""
    zone = settings.zone

    @pass_context
    def gettext(context: Context, key: str, **values: Any) -> str:
        return translate(str(context.get("lang", settings.web.default_language)), key, **values)

    def local_datetime(value: datetime | None) -> str:
        return "" if value is None else f"{value.astimezone(zone):%Y-%m-%d %H:%M}"

    def local_date(value: datetime | date | None) -> str:
        if value is None:
            return ""
        day = value.astimezone(zone).date() if isinstance(value, datetime) else value
        return f"{day:%Y-%m-%d}"

    @pass_context
    def ago(context: Context, value: datetime | None) -> str:
        if value is None:
            return ""
        now: datetime = context["now"]
        return relative(value, now, str(context.get("lang", "zh")))

    def minutes(seconds: float | None) -> str:
        return "" if seconds is None else f"{seconds / 60:.1f}"

    env.globals["_"] = gettext
    env.filters["dt"] = local_datetime
    env.filters["d"] = local_date
    env.filters["ago"] = ago
    env.filters["minutes"] = minutes


def relative(value: datetime, now: datetime, lang: str) -> str:
    """'5 min ago' / '5分钟前'; future times read 'in 5 min' / '5分钟后'."""
    seconds = (now - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        amount, unit_en, unit_zh = int(seconds), "s", "秒"
    elif seconds < 3600:
        amount, unit_en, unit_zh = int(seconds // 60), "min", "分钟"
    elif seconds < 86400 * 2:
        amount, unit_en, unit_zh = int(seconds // 3600), "h", "小时"
    else:
        amount, unit_en, unit_zh = int(seconds // 86400), "days", "天"
    if lang == "zh":
        return f"{amount}{unit_zh}{'后' if future else '前'}"
    return f"in {amount} {unit_en}" if future else f"{amount} {unit_en} ago"
