"""Every sentence the bot says, per language; plain data so tests can check no text is missing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from domain.filters import FILTER_SPECS
from domain.subscriber import language_of

DEFAULT_LANGUAGE = "en"
# The languages the bot speaks, as offered by /language (each shown in itself).
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "ru": "Русский"}

# English "what a filter accepts" comes from the filter specs themselves, so it cannot drift.
_ACCEPTED_EN: dict[str, str] = {name: spec.accepted for name, spec in FILTER_SPECS.items()}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "welcome": (
            "<b>Welcome to Token Alert Bot, {name}!</b>\n\n"
            "I watch the Solana token calls of Telegram channels in real time, check every token "
            "against <i>your</i> filters, and alert you once per token that passes, then tell "
            "you when it does 2x, 5x and 10x.\n\n"
            "Tap <b>Filters</b> below to choose what reaches you, or start from a ready-made "
            "<b>Preset</b>; <b>Test my filters</b> shows what they would have caught in the last "
            "24 hours. /help lists every command."
        ),
        "help": (
            "<b>What I can do</b>\n"
            "/start: welcome and main menu\n"
            "/settings: change your filters with buttons, test them on the last 24 hours\n"
            "/presets: ready-made filter sets to apply or follow\n"
            "/filters: your filters\n"
            "/set NAME VALUE: set a filter, e.g. <code>/set min_mcap 50k</code>\n"
            "/unset NAME: remove a filter\n"
            "/pause, /resume: stop and restart alerts\n"
            "/plans: plans and prices\n"
            "/status: your plan and settings\n"
            "/channels: the calling channels with the best win rate\n"
            "/language: choose the language\n"
            "/paysupport: help with a payment\n"
            "/privacy: what is stored about you, and deleting it"
        ),
        "error": "Something went wrong on our side. Please try again in a moment.",
        "unavailable": "Your settings cannot be reached right now. Please try again in a minute.",
        "filters_title": "<b>Your filters</b>",
        "filters_none": "You have no filters set: every called token passes.",
        "filters_hint": "Change one with <code>/set NAME VALUE</code>, remove one with <code>/unset NAME</code>.",
        "set_usage": (
            "<b>Usage:</b> <code>/set NAME VALUE</code>, e.g. <code>/set min_mcap 50k</code>\n\n"
            "<b>Filters and the values they accept:</b>\n{filters}"
        ),
        "unset_usage": "<b>Usage:</b> <code>/unset NAME</code>, e.g. <code>/unset min_mcap</code>\nFilters: {names}",
        "filter_set": "✅ Saved: <code>{name}</code> = {value}",
        "filter_unset": "✅ Removed: <code>{name}</code>",
        "filter_not_set": "<code>{name}</code> was not set; nothing changed.",
        "filter_unknown": (
            "❌ There is no filter called <code>{name}</code>. Nothing was saved.\n"
            "Filters are: {names}\nSee <code>/set</code> for what each accepts."
        ),
        "filter_bad_value": (
            "❌ Cannot set <code>{name}</code> to <code>{value}</code>: {reason}.\n"
            "Accepted: {accepted}\nNothing was saved."
        ),
        "reason_usd": "that is not a USD amount",
        "reason_whole_number": "it must be a whole number from {minimum} to {maximum}",
        "reason_minutes": "that is not a number of minutes",
        "reason_minutes_range": "it must be from 1 minute to 1 year",
        "reason_percent": "it must be a percentage from 0 to 100",
        "reason_multiple": "it must be a multiple from 0 to 1000000",
        "reason_channels": "that is not a list of channel ids or @usernames",
        "reason_channels_max": "at most {maximum} channels are allowed",
        "filter_conflict": (
            "❌ Cannot set <code>{name}</code> to <code>{value}</code>: it contradicts your other filters "
            "(min_mcap must not be above max_mcap).\nNothing was saved."
        ),
        "paused": "⏸ Alerts paused. Send /resume to get them again.",
        "already_paused": "Alerts are already paused. Send /resume to get them again.",
        "resumed": "▶️ Alerts resumed.",
        "already_active": "Alerts are already on.",
        "resumed_no_plan": "You have no active plan, so no alerts will come yet: see /plans.",
        # The reports (bot/reports.py) and their switch (bot/routers/reports.py).
        "report_period_day": "24 h to {date} {time} UTC",
        "report_period_week": "7 days to {date} {time} UTC",
        "report_na": "n/a",
        "report_more": "…and {count} more",
        "report_daily_title": "📊 <b>Your alerts of the day</b>\n{period}",
        "report_daily_summary": "Alerts: {alerts} · reached 2x: {won}",
        "report_daily_best": "Best: <b>{symbol}</b> {peak}",
        "report_daily_line": "{n}. <b>{symbol}</b>: peak {peak} · now {now}",
        "report_daily_chart": "Your alerts · {date}",
        "report_best_title": "🏆 <b>Best of the day</b>\n{period}",
        "report_best_tokens": "<b>Tokens</b>, peak since their first call:",
        "report_best_token_line": "{n}. <b>{symbol}</b>: {peak} · now {now} · channels: {channels}",
        "report_best_channels": "<b>Channels</b>, calls that reached 2x (at least {min} calls):",
        "report_best_channel_line": "{n}. {name}: {won}/{measured} · best {best}",
        "report_best_chart": "Best tokens · {date}",
        "report_weekly_title": "📅 <b>Channels of the week</b>\n{period}",
        "report_weekly_line": "{n}. {name}: {rate} won ({won}/{measured}) · mean {mean} · median {median}",
        "report_weekly_note": (
            "A call won when its token has reached 2x since (the week's calls are young: so far). "
            "Channels with at least {min} priced calls; the mean counts a call at most {cap}."
        ),
        "report_weekly_chart": "Win rate · week to {date}",
        "report_chart_peak": "peak",
        "report_chart_now": "now",
        "button_reports": "📊 Reports: {state}",
        "reports_state_on": "on",
        "reports_state_off": "off",
        "reports_screen": (
            "<b>Reports</b>\n"
            "• every day at 20:00 UTC: your alerts of the last 24 hours, with each token's peak and "
            "current multiple since your alert (nothing on a day without alerts);\n"
            "• at 21:00 UTC: the day's best tokens and channels;\n"
            "• on Mondays at 09:00 UTC: the channels of the week.\n\n"
            "Reports are <b>{state}</b>."
        ),
        "button_reports_on": "Turn reports on",
        "button_reports_off": "Turn reports off",
        "admin_only": "⛔ This command is for admins only.",
        "health_title": "🩺 <b>Health: {status}</b>",
        "grant_usage": "<b>Usage:</b> <code>/grant USER_ID DAYS</code>: a numeric Telegram user id and 1..3650 days.",
        "revoke_usage": "<b>Usage:</b> <code>/revoke USER_ID</code>: a numeric Telegram user id.",
        "user_unknown": "User <code>{user_id}</code> is unknown: they have to send /start to the bot first.",
        "grant_done": "✅ Granted {days} days to <code>{user_id}</code>. Plan active until {expires}.",
        "grant_notice": "🎁 You were given {days} days of alerts. Your plan is active until {expires}.",
        "revoke_done": "✅ Revoked the plan of <code>{user_id}</code>.",
        "revoke_none": "<code>{user_id}</code> has no active plan; nothing changed.",
        "admin_menu": (
            "🛠 <b>Admin</b>\n"
            "/stats: users, plans, alerts, deliveries, revenue\n"
            "/user USER_ID: a user's record, with grant, revoke and ban buttons\n"
            "/ban USER_ID, /unban USER_ID: stop or restore everything the bot sends them\n"
            "/payments: recent payments by rail and status\n"
            "/channels: the channels' figures with the calls behind them (N)\n"
            "/export: users, subscriptions and payments as CSV files\n"
            "/broadcast TEXT: a message to every user, or to a group of them\n"
            "/grant USER_ID DAYS, /revoke USER_ID, /refund CHARGE_ID"
        ),
        "button_admin_stats": "📊 Statistics",
        "button_admin_payments": "💳 Payments",
        "button_admin_channels": "📡 Channels",
        "button_admin_export": "📦 Export CSV",
        "button_admin_menu": "⬅ Admin menu",
        "stats_title": "📊 <b>Statistics</b>, {moment}",
        "stats_users": (
            "<b>Users</b>: {total}: active {active} (alerts paused {paused}), banned {banned}, "
            "blocked the bot {blocked}; new in 7 days: {new}"
        ),
        "stats_plans": "<b>Live plans</b>: {plans}",
        "stats_none": "none",
        "stats_alerts": "<b>Alerts</b>: today {today}, last 7 days {week}",
        "stats_deliveries": "<b>Deliveries today</b>: sent {sent}, recipient gone {gone}, failed {failed}",
        "stats_revenue": "<b>Revenue</b> (confirmed payments: all time; last 30 days):",
        "stats_revenue_line": "• {rail}: {count} for {amount}; {count_30d} for {amount_30d}",
        "stats_revenue_none": "• none yet",
        "user_usage": "<b>Usage:</b> <code>/user USER_ID</code>: a numeric Telegram user id.",
        "user_title": "👤 <b>User</b> <code>{user_id}</code> {name}",
        "user_profile": "Language: {lang} · status: {status} · since {since} · last seen {seen}",
        "user_status_paused": "{status}, alerts paused",
        "user_plan": "<b>Plan</b>: {plan} until {expires}",
        "user_no_plan": "<b>Plan</b>: none",
        "user_alerts": (
            "<b>Alerts</b>: {total} (last 7 days {week}); deliveries: sent {sent}, gone {gone}, failed {failed}"
        ),
        "user_filters": "<b>Filters</b>:",
        "user_filters_none": "<b>Filters</b>: none, every call passes",
        "user_payments": "<b>Payments</b>, latest first:",
        "user_payments_none": "<b>Payments</b>: none",
        "never": "never",
        "payment_line": "• {moment} · {rail} · {amount} · {status}{plan}",
        "payment_line_user": "• {moment} · <code>{user_id}</code> · {rail} · {amount} · {status}{plan}",
        "button_grant_30": "🎁 Grant 30 days",
        "button_revoke_plan": "⛔ Revoke the plan",
        "button_ban": "🚫 Ban",
        "button_unban": "✅ Unban",
        "ban_usage": "<b>Usage:</b> <code>/ban USER_ID</code>: a numeric Telegram user id.",
        "unban_usage": "<b>Usage:</b> <code>/unban USER_ID</code>: a numeric Telegram user id.",
        "ban_done": "🚫 <code>{user_id}</code> is banned: no alerts, no broadcasts, no answers.",
        "ban_already": "<code>{user_id}</code> is banned already; nothing changed.",
        "ban_admin": "<code>{user_id}</code> is an admin (ADMIN_IDS) and cannot be banned.",
        "unban_done": "✅ <code>{user_id}</code> is no longer banned.",
        "unban_not_banned": "<code>{user_id}</code> is not banned; nothing changed.",
        "admin_channels_title": (
            "📡 <b>Channels</b> by the bot's own figures, most measured first (N: resolved calls)"
        ),
        "admin_channels_line": (
            "• {name}: N={resolved}, 2x {wins} ({win_rate}), average {avg}, median {median}; "
            "open {open}, unpriced {unpriced}"
        ),
        "admin_channels_none": "No channel has a resolved call yet.",
        "payments_title": "💳 <b>Payments</b>",
        "payments_counts": "<b>By rail and status</b>:",
        "payments_counts_line": "• {rail}: {statuses}",
        "payments_recent": "<b>Latest</b>:",
        "payments_none": "No payments yet.",
        "export_caption": "{table}: {rows} row(s)",
        "export_sending": "Sending the CSV files…",
        "broadcast_usage": (
            "<b>Usage:</b> <code>/broadcast TEXT</code>: the text, formatting included, goes to the "
            "audience you choose on the preview, once you press Send."
        ),
        "broadcast_too_long": "❌ The text has {length} characters; a broadcast takes at most {limit}.",
        "broadcast_preview": (
            "📣 <b>Broadcast preview</b>: to {audience}, {count} user(s). Choose the audience, then send.\n\n{html}"
        ),
        "audience_all": "everyone",
        "audience_paying": "users with a plan",
        "audience_trial": "users on the trial",
        "audience_free": "users without a plan",
        "button_broadcast_send": "📣 Send to {count}",
        "broadcast_cancelled": "Broadcast cancelled; nothing was sent.",
        "broadcast_gone": "This broadcast was sent or cancelled already.",
        "broadcast_sending": "Sending…",
        "broadcast_progress": (
            "📣 <b>Broadcast</b> to {audience}: {handled} of {total}\n"
            "✅ sent {sent} · 🚫 blocked {blocked} · ❌ failed {failed}"
        ),
        "broadcast_done": (
            "📣 <b>Broadcast finished</b> to {audience}: {total} recipient(s)\n"
            "✅ sent {sent} · 🚫 blocked {blocked} · ❌ failed {failed}"
        ),
        "admincmd_admin": "Admin menu",
        "admincmd_stats": "Users, plans, alerts, revenue",
        "admincmd_user": "A user's record: /user USER_ID",
        "admincmd_payments": "Recent payments",
        "admincmd_channels": "Channel figures",
        "admincmd_export": "Users, subscriptions, payments as CSV",
        "admincmd_broadcast": "Message users: /broadcast TEXT",
        "admincmd_ban": "Ban a user: /ban USER_ID",
        "admincmd_unban": "Lift a ban: /unban USER_ID",
        "admincmd_grant": "Give days: /grant USER_ID DAYS",
        "admincmd_revoke": "End a plan: /revoke USER_ID",
        "admincmd_refund": "Refund Stars: /refund CHARGE_ID",
        "accepted_min_mcap": _ACCEPTED_EN["min_mcap"],
        "accepted_max_mcap": _ACCEPTED_EN["max_mcap"],
        "accepted_min_liquidity": _ACCEPTED_EN["min_liquidity"],
        "accepted_min_holders": _ACCEPTED_EN["min_holders"],
        "accepted_max_age": _ACCEPTED_EN["max_age"],
        "accepted_min_win_rate": _ACCEPTED_EN["min_win_rate"],
        "accepted_min_avg_gain": _ACCEPTED_EN["min_avg_gain"],
        "accepted_channels": _ACCEPTED_EN["channels"],
        "accepted_exclude_channels": _ACCEPTED_EN["exclude_channels"],
        "accepted_min_channels": _ACCEPTED_EN["min_channels"],
        "replay_working": "Replaying your filters over the last 24 hours…",
        "replay_result": (
            "🔁 With your filters, the last {hours} hours would have brought <b>{alerts}</b> alerts; "
            "<b>{reached}</b> of them reached 2x after the alert."
        ),
        "replay_result_one": (
            "🔁 With your filters, the last {hours} hours would have brought <b>1</b> alert; "
            "<b>{reached}</b> of 1 reached 2x after the alert."
        ),
        "replay_none": (
            "🔁 With your filters, the last {hours} hours would have brought <b>no</b> alerts. "
            "Try loosening them: /filters shows them, /unset removes one."
        ),
        "replay_top_title": "<b>Best of them:</b>",
        "replay_top_line": "• {symbol}: {multiple}",
        "replay_no_price": "no price after the alert",
        "replay_partial": "ℹ️ The history holds only {covered} hours so far, so this covers less than {hours} hours.",
        "replay_no_history": "ℹ️ There is no call history yet to test your filters on. Please try again later.",
        "replay_unavailable": "The call history cannot be read right now. Please try again in a minute.",
        # ---- the command menu (bot/runtime.py bot_commands); at most 256 characters each
        "cmd_start": "Welcome and main menu",
        "cmd_settings": "Change your filters with buttons",
        "cmd_filters": "Your filters",
        "cmd_presets": "Ready-made filter sets",
        "cmd_status": "Your plan, alerts and filters",
        "cmd_plans": "Plans and prices",
        "cmd_pause": "Pause alerts",
        "cmd_resume": "Resume alerts",
        "cmd_language": "Choose the language",
        "cmd_help": "What the bot can do",
        "cmd_privacy": "What is stored; delete your data",
        "cmd_paysupport": "Help with a payment",
        "cmd_channels": "Channels with the best win rate",
        "channels_title": "📊 <b>Channels with the best win rate</b>",
        "channels_line": (
            "{rank}. {name}: <b>{rate}</b> of {resolved} resolved calls reached 2x · avg {avg} · median {median}{open}"
        ),
        "channels_open": " · {count} still open",
        "channels_none": "No channel has {min} resolved calls yet.",
        "channels_few_title": "<b>Too few resolved calls to rank yet</b> (fewer than {min}):",
        "channels_few_line": "• {name}: {wins} of {resolved} reached 2x",
        "channels_rules": (
            "<i>Measured by the bot against the price at each call. A call is resolved once it reaches 2x "
            "(a win) or its 7 days are over (a loss); younger calls are still open. The average caps "
            "each call's peak at {cap}.</i>"
        ),
        "channels_unavailable": "Channel statistics cannot be read right now. Please try again in a minute.",
        # ---- menus (bot/keyboards.py, bot/routers/settings.py, bot/routers/account.py)
        "menu_title": "<b>Main menu</b>\nWhat would you like to do?",
        "menu_filters": "🎯 Filters",
        "menu_presets": "📦 Presets",
        "menu_plans": "💳 Plans",
        "menu_status": "📊 Status",
        "menu_language": "🌐 Language",
        "menu_help": "❓ Help",
        "button_back": "⬅ Back",
        "button_cancel": "✖ Cancel",
        "button_replay": "🧪 Test my filters on the last 24 hours",
        "button_reset_all": "♻ Reset all filters",
        "button_reset_one": "♻ Remove this filter",
        "button_delete_data": "🗑 Delete my data",
        "button_delete_confirm": "🗑 Yes, delete everything",
        "label_min_mcap": "Min market cap",
        "label_max_mcap": "Max market cap",
        "label_min_liquidity": "Min liquidity",
        "label_min_holders": "Min holders",
        "label_max_age": "Max token age",
        "label_min_win_rate": "Min win rate",
        "label_min_avg_gain": "Min avg gain",
        "label_channels": "Only channels",
        "label_exclude_channels": "Exclude channels",
        "label_min_channels": "Min channels",
        "stale_button": "This button is out of date; here is the menu again.",
        "filters_screen_hint": "Tap a filter to change it.",
        "ask_value": (
            "Send the new value for <b>{label}</b> (<code>{name}</code>).\nAccepted: {accepted}\nNow: {current}"
        ),
        "value_not_set": "not set",
        "flow_try_again": "Send another value, or press Cancel.",
        "flow_cancelled": "Nothing changed.",
        "reset_all_done": "✅ All filters removed: every called token passes.",
        "status_title": "<b>Your status</b>",
        "status_plan_active": "Plan: active until {date} ({days} days left)",
        "status_plan_none": "Plan: none; alerts come with a plan, see /plans",
        "status_plan_admin": "Plan: admin, alerts always on",
        "status_alerts_on": "Alerts: on",
        "status_alerts_paused": "Alerts: paused (/resume)",
        "status_alerts_today": "Alerts today: {count}",
        "status_preset": "Preset followed: {preset}",
        "status_filters_none": "Filters: none, every called token passes",
        "status_invite": "Invite friends: {link} ({count} joined)",
        # ---- follow-ups after an alert (bot/followups.py, bot/routers/followups.py)
        "followup": (
            "🚀 <b>{multiple}x</b> on <b>{symbol}</b> since your alert\n"
            "💰 Market cap: {base} → <b>{now}</b>\n"
            "🏔 Peak so far: {peak}\n"
            "<code>{address}</code>"
        ),
        "followup_unknown": "unknown",
        "status_followups": "Follow-ups: {choice}",
        "button_followups": "🔔 Follow-ups: {choice}",
        "followups_title": (
            "<b>Follow-ups</b>\n"
            "After an alert I tell you when the token reaches 2x, 3x, 5x, 10x, 20x, 50x or 100x of "
            "its market cap at your alert: once each, only the highest when it jumps past several, "
            "as a reply to the alert, for 7 days or until the token dies.\n\n"
            "Now: <b>{choice}</b>"
        ),
        "followups_saved": "✅ Follow-ups: {choice}",
        "followups_choice_all": "every multiple",
        "followups_choice_5": "from 5x",
        "followups_choice_10": "from 10x",
        "followups_choice_off": "off",
        "followups_choice_from": "from {multiple}x",
        "language_title": "Choose your language:",
        "language_set": "✅ Language: English",
        "privacy": (
            "<b>What this bot stores about you</b>\n"
            "• your Telegram id, username, first name and language;\n"
            "• your filters, their change history and the preset you follow;\n"
            "• the alerts you were sent (token, time, market cap) and their multipliers;\n"
            "• your plan and payments (payments are kept for the accounts, without your id, "
            "after you delete your data);\n"
            "• who invited you, and whom you invited.\n\n"
            "Nothing is shared with anyone. Press the button below to delete all of it."
        ),
        "privacy_confirm": (
            "<b>Delete all your data?</b>\n"
            "Your filters, history and alerts go, and so does your plan, even a paid one. "
            "This cannot be undone; sending /start later starts afresh."
        ),
        "privacy_deleted": "🗑 Done: everything the bot kept about you is deleted. Send /start to begin again.",
        "privacy_cancelled": "Nothing was deleted.",
        "paysupport": (
            "<b>Help with a payment</b>\n"
            "Describe the problem in one message starting with /paysupport, for example:\n"
            "<code>/paysupport paid 0.09 SOL, plan not active, tx 5Kd…</code>\n"
            "It goes straight to the team, with your user id, and you get the answer here."
        ),
        "paysupport_sent": "✅ Sent to the team. You will get the answer in this chat.",
        "paysupport_to_admin": "💬 <b>Payment support</b> from {user} (<code>{user_id}</code>):\n{message}",
        "paysupport_no_admins": "No one can take payment questions right now. Please try again later.",
        # What monitoring tells the admins: one message when an incident opens, one when it is over.
        "monitor_started": "🔄 <b>Bot started</b> on <code>{instance}</code> (version {version}). {previous}",
        "monitor_previous_first": "First start of this instance.",
        "monitor_previous_clean": "The previous run stopped cleanly at {at}.",
        "monitor_previous_unclean": "⚠ The previous run ended without a clean stop; last seen {at}.",
        "monitor_previous_unknown": "Redis is unreachable, so how the previous run ended is unknown.",
        "monitor_redis_opened": (
            "🔴 <b>Redis unhealthy</b> for {duration} on <code>{instance}</code>. The bot answers from memory "
            "and sends alerts directly; details in rediserror.log."
        ),
        "monitor_redis_recovered": "🟢 <b>Redis is back</b> on <code>{instance}</code> after {duration}.",
        "monitor_stream_opened": (
            "🔴 <b>Feed {feed} down</b> for {duration} on <code>{instance}</code>: no frames arrive. "
            "It keeps reconnecting on its own."
        ),
        "monitor_stream_recovered": "🟢 <b>Feed {feed} is back</b> on <code>{instance}</code> after {duration}.",
        "monitor_queue_opened": (
            "🟠 <b>Event queue {percent}% full</b> ({depth} of {capacity}) on <code>{instance}</code>: "
            "processing falls behind the feed."
        ),
        "monitor_queue_recovered": (
            "🟢 <b>Event queue</b> on <code>{instance}</code> back to {percent}% ({depth} of {capacity}) "
            "after {duration}."
        ),
        "monitor_memory_opened": (
            "🟠 <b>Memory at {percent}%</b> of the limit ({used_mb} of {limit_mb} MB) on <code>{instance}</code>."
        ),
        "monitor_memory_recovered": (
            "🟢 <b>Memory</b> on <code>{instance}</code> back to {percent}% ({used_mb} of {limit_mb} MB) "
            "after {duration}."
        ),
        "monitor_rate_limited_opened": (
            "🟠 <b>Telegram keeps answering 429</b>: {count} in the last {window} on <code>{instance}</code>. "
            "Sending pauses as long as Telegram asks."
        ),
        "monitor_rate_limited_recovered": (
            "🟢 <b>No 429</b> from Telegram for {window} on <code>{instance}</code>; the incident lasted {duration}."
        ),
        "monitor_failures_opened": (
            "🟠 <b>Deliveries keep failing</b>: {count} in the last {window} on <code>{instance}</code>; "
            "see bot.log (alertbot.sender)."
        ),
        "monitor_failures_recovered": (
            "🟢 <b>No failed delivery</b> for {window} on <code>{instance}</code>; the incident lasted {duration}."
        ),
        "duration_seconds": "{n} s",
        "duration_minutes": "{n} min",
        "duration_hours": "{h} h {m} min",
        "paysupport_wait": (
            "⏳ Your last message reached the team less than a minute ago, so this one was not sent. "
            "You can write again in {seconds} s; the answer to the first comes here."
        ),
        "plans_title": "<b>Plans</b>\nA plan turns alerts on for its days; days add up.",
        "notice_receipt": "🧾 <b>Payment received</b>\nPlan: {days} days of alerts\n"
        "Paid: {amount} {currency}\nAlerts are on until {plan_end}.",
        "notice_partial": "⚠️ We received {paid} {currency}, which is {missing} {currency} short of the price. "
        "Send the rest to the same payment request and the order completes.",
        "notice_rejected": "⚠️ This payment could not be credited: {reason}. "
        "Write to /paysupport and we will sort it out.",
        "notice_reminder_3d": "⏳ Your plan ends in 3 days ({plan_end}). Renew to keep the alerts coming.",
        "notice_reminder_1d": "⏳ Your plan ends tomorrow ({plan_end}). Renew to keep the alerts coming.",
        "notice_plan_ended": "Your plan has ended, so alerts have stopped. Renew any time: your filters are kept.",
        "notice_referral_reward": "🎁 Someone you invited just paid for a plan: {days} days of alerts are yours. "
        "Your plan is active until {plan_end}.",
        "button_renew": "💳 Renew",
        "button_trial": "🎁 Try {days} days free",
        "trial_started": "🎁 Your free trial is on: alerts until {plan_end}. "
        "Set your filters so they bring what you want.",
        "trial_used": "You have had your free trial already. See /plans to keep the alerts coming.",
        "notice_not_paid": "⚠️ Transaction <code>{signature}</code> paid nothing towards your order: {why}.",
        "verdict_paid": "it is paid",
        "verdict_underpaid": "it paid less than the price",
        "verdict_failed": "it failed on chain, so no SOL moved",
        "verdict_no_reference": "it does not carry your order's reference",
        "verdict_not_received": "it sent nothing to the bot's wallet",
        "verdict_not_found": "it is not finalized yet; try again in a minute",
        "verdict_malformed": "it is not a transaction we can read",
        "plans_none": "No plans are on offer right now.",
        "plan_card": "<b>{title}</b>: {days} days of alerts\nPrice: {prices}",
        "plan_unknown": "There is no plan called <code>{code}</code>; here are the plans on offer.",
        "plan_how_to_pay": "Payment questions: /paysupport",
        # ---- buying a plan (bot/routers/payments.py)
        "plan_choose_rail": "Choose how to pay:",
        "button_buy_stars": "⭐ Pay {amount} with Telegram Stars",
        "button_buy_sol": "◎ Pay {amount} in SOL",
        "button_buy_nowpayments": "💠 Pay {amount} in crypto",
        "button_monthly": "🔁 Monthly (auto-renew): {amount} a month",
        "order_title": "🧾 <b>Order</b> <code>{order_id}</code>",
        "order_plan": "Plan: <b>{title}</b> ({days} days)",
        "order_amount": "Amount: <b>{amount}</b>",
        "order_paid_part": "Paid so far: {paid}",
        "order_expires": "Pay by: {expires}",
        "order_status": "Status: {status}",
        "order_status_open": "⏳ waiting for your payment",
        "order_status_partial": "◐ partly paid, waiting for the rest",
        "order_status_paid": "✅ paid",
        "order_status_cancelled": "✖ cancelled",
        "order_status_expired": "⌛ expired, nothing was charged",
        "order_hint_stars": "Pay with the invoice below; your plan starts as soon as Telegram confirms the payment.",
        "order_hint_sol": (
            "Send exactly <b>{amount}</b> from a Solana Pay wallet: scan the QR code or open\n<code>{url}</code>"
        ),
        "order_hint_nowpayments": (
            "Pay on the NOWPayments page (button below); your plan starts once the payment is confirmed."
        ),
        "button_open_payment_page": "💠 Open the payment page",
        "button_refresh": "🔄 Refresh",
        "button_cancel_order": "✖ Cancel the order",
        "button_plans": "⬅ Plans",
        "order_cancelled": "✖ Order cancelled. Nothing was charged.",
        "order_not_cancellable": "This order can no longer be cancelled.",
        "order_gone": "This order does not exist or is not yours; here are the plans.",
        "order_rail_unavailable": (
            "This way of paying is not available right now. Please choose another one or try later."
        ),
        "payments_unavailable": (
            "Payments cannot be taken right now. Nothing was charged; please try again in a few minutes."
        ),
        "invoice_title": "{title}",
        "invoice_description": "{days} days of Token Alert Bot alerts (order {order_id}).",
        "subscription_title": "{title}, monthly",
        "subscription_description": "Token Alert Bot alerts, renewed every 30 days until you cancel it in /status.",
        "subscription_offer": (
            "🔁 <b>Monthly (auto-renew)</b>\n<b>{title}</b>: {amount} every 30 days. Telegram renews it until you "
            "cancel it in /status; each renewal adds 30 days to your plan."
        ),
        "button_subscribe": "⭐ Subscribe for {amount} a month",
        "precheckout_unknown": "This invoice is no longer valid. Please start again from /plans.",
        "precheckout_not_yours": "This invoice was made for someone else. Please buy your own plan in /plans.",
        "precheckout_closed": "This order is already paid, cancelled or expired. Please start a new one in /plans.",
        "precheckout_amount": "The amount does not match the order. Please start again from /plans.",
        "precheckout_unavailable": (
            "Payments cannot be checked right now. Nothing was charged; please try again in a minute."
        ),
        "receipt_pending": (
            "✅ Payment received. Your plan is being activated; a message follows here as soon as it is."
        ),
        "status_subscription": "Auto-renew: {amount} every 30 days, next on {date}",
        "status_subscription_canceled": "Auto-renew: cancelled; paid until {date}",
        "button_cancel_autorenew": "✖ Cancel auto-renew",
        "unsub_confirm": (
            "<b>Cancel auto-renew?</b>\nTelegram will not charge you again; your plan stays active until {date}."
        ),
        "button_unsub_confirm": "✖ Yes, cancel auto-renew",
        "button_keep": "Keep it",
        "unsub_done": "✅ Auto-renew cancelled. Your plan stays active until {date}.",
        "unsub_none": "You have no subscription that renews.",
        "unsub_failed": "Telegram did not take the cancellation right now. Please try again in a minute.",
        "refund_usage": (
            "<b>Usage:</b> <code>/refund CHARGE_ID</code>: the telegram_payment_charge_id of a Stars payment "
            "(the payments log and the receipt's support request show it)."
        ),
        "refund_unknown": "No Stars payment <code>{charge_id}</code> is known; nothing changed.",
        "refund_failed": "Telegram refused to refund <code>{charge_id}</code>: {error}. Nothing changed.",
        "refund_done": "✅ Refunded <code>{charge_id}</code> to <code>{user_id}</code>; their plan has ended.",
        "refund_already": (
            "Telegram had already refunded <code>{charge_id}</code>; the plan of <code>{user_id}</code> has ended."
        ),
        "refund_notice": "↩ Your Stars payment was refunded, and your plan has ended.",
        "throttled": "⏳ You are going a little fast. Please wait a few seconds; your next tap will work.",
        # ---- presets (bot/routers/presets.py)
        "presets_title": (
            "<b>📦 Presets</b>\nReady-made filter sets. <b>Apply</b> copies one into your filters; "
            "<b>Follow</b> does too, and keeps your filters in step when an admin changes the preset."
        ),
        "presets_none": "There are no presets yet.",
        "preset_following": "you follow this preset",
        "preset_no_filters": "no filters: every called token passes",
        "preset_button_apply": "✅ Apply {title}",
        "preset_button_follow": "🔔 Follow",
        "preset_button_unfollow": "🔕 Unfollow",
        "preset_button_back": "⬅ Back",
        "preset_applied": "✅ Preset <b>{title}</b> applied. Your filters now:\n{filters}",
        "preset_followed": (
            "🔔 You follow the preset <b>{title}</b>: when an admin changes it, your filters change with it. "
            "Changing a filter yourself stops following.\nYour filters now:\n{filters}"
        ),
        "preset_unfollowed": "🔕 You no longer follow <b>{title}</b>. Your filters stay as they are.",
        "preset_gone": "This preset no longer exists; here are the current ones.",
        "preset_not_followed": "You do not follow this preset.",
        "preset_changed_notice": (
            "🔔 An admin changed the preset <b>{title}</b> you follow, so your filters changed too. "
            "They are now:\n{filters}\n\nTo keep filters of your own, change one with /set: that stops following."
        ),
        "preset_deleted_notice": (
            "The preset <b>{title}</b> you followed was removed. Your filters stay as they are; "
            "see /presets for the others."
        ),
        "setpreset_usage": (
            '<b>Usage:</b> <code>/setpreset CODE "Title" ["Description"] NAME=VALUE ...</code>\n'
            'e.g. <code>/setpreset safe "Safe" min_mcap=50k min_liquidity=15k min_win_rate=45</code>\n'
            "CODE: 1 to 24 of a-z, 0-9, _. The filters listed become the preset's whole set "
            "(names and values as in /set). Without a title or description the preset keeps its own."
        ),
        "setpreset_current": "<b>The presets now</b> (copy one to change it):\n{definitions}",
        "setpreset_error": "❌ {reason}.\nNothing was saved.\n\n{usage}",
        "setpreset_created": "✅ Preset <code>{code}</code> (<b>{title}</b>) created:\n{filters}",
        "setpreset_changed": (
            "✅ Preset <code>{code}</code> (<b>{title}</b>) saved:\n{filters}\n"
            "Followers updated and notified: {updated}."
        ),
        "setpreset_followers_failed": (
            "⚠ Some followers could not be updated now (see the log); "
            "send the same /setpreset {code} again later to finish."
        ),
        "delpreset_usage": "<b>Usage:</b> <code>/delpreset CODE</code>, e.g. <code>/delpreset degen</code>",
        "delpreset_unknown": "There is no preset <code>{code}</code>; nothing changed.",
        "delpreset_done": (
            "✅ Preset <code>{code}</code> (<b>{title}</b>) deleted. "
            "Followers told (they keep their filters): {followers}."
        ),
    },
    "ru": {
        "welcome": (
            "<b>Добро пожаловать в Token Alert Bot, {name}!</b>\n\n"
            "Я в реальном времени слежу за коллами токенов Solana в Telegram-каналах, проверяю "
            "каждый токен по <i>вашим</i> фильтрам и присылаю одно оповещение на токен, а потом "
            "сообщаю, когда он сделает 2x, 5x и 10x.\n\n"
            "Нажмите <b>Фильтры</b> ниже, чтобы выбрать, что к вам придёт, или начните с готового "
            "<b>пресета</b>; <b>Проверить фильтры</b> покажет, что они поймали бы за последние "
            "24 часа. Все команды есть в /help."
        ),
        "help": (
            "<b>Что я умею</b>\n"
            "/start: приветствие и главное меню\n"
            "/settings: настроить фильтры кнопками и проверить их на последних 24 часах\n"
            "/presets: готовые наборы фильтров: применить или подписаться\n"
            "/filters: ваши фильтры\n"
            "/set ИМЯ ЗНАЧЕНИЕ: задать фильтр, например <code>/set min_mcap 50k</code>\n"
            "/unset ИМЯ: убрать фильтр\n"
            "/pause, /resume: остановить и возобновить оповещения\n"
            "/plans: тарифы и цены\n"
            "/status: ваш тариф и настройки\n"
            "/channels: каналы с лучшим винрейтом\n"
            "/language: выбрать язык\n"
            "/paysupport: помощь с оплатой\n"
            "/privacy: какие данные о вас хранятся и как их удалить"
        ),
        "error": "У нас что-то пошло не так. Пожалуйста, попробуйте ещё раз чуть позже.",
        "unavailable": "Ваши настройки сейчас недоступны. Пожалуйста, попробуйте через минуту.",
        "filters_title": "<b>Ваши фильтры</b>",
        "filters_none": "Фильтры не заданы: проходит каждый токен из коллов.",
        "filters_hint": "Изменить: <code>/set ИМЯ ЗНАЧЕНИЕ</code>, убрать: <code>/unset ИМЯ</code>.",
        "set_usage": (
            "<b>Как использовать:</b> <code>/set ИМЯ ЗНАЧЕНИЕ</code>, например <code>/set min_mcap 50k</code>\n\n"
            "<b>Фильтры и допустимые значения:</b>\n{filters}"
        ),
        "unset_usage": (
            "<b>Как использовать:</b> <code>/unset ИМЯ</code>, например <code>/unset min_mcap</code>\nФильтры: {names}"
        ),
        "filter_set": "✅ Сохранено: <code>{name}</code> = {value}",
        "filter_unset": "✅ Убрано: <code>{name}</code>",
        "filter_not_set": "Фильтр <code>{name}</code> не был задан; ничего не изменилось.",
        "filter_unknown": (
            "❌ Фильтра <code>{name}</code> нет. Ничего не сохранено.\n"
            "Фильтры: {names}\nЧто принимает каждый, смотрите в <code>/set</code>."
        ),
        "filter_bad_value": (
            "❌ Нельзя установить <code>{name}</code> = <code>{value}</code>: {reason}.\n"
            "Допустимо: {accepted}\nНичего не сохранено."
        ),
        "reason_usd": "это не сумма в USD",
        "reason_whole_number": "нужно целое число от {minimum} до {maximum}",
        "reason_minutes": "это не число минут",
        "reason_minutes_range": "нужно от 1 минуты до 1 года",
        "reason_percent": "нужен процент от 0 до 100",
        "reason_multiple": "нужен множитель от 0 до 1000000",
        "reason_channels": "это не список id каналов или @username",
        "reason_channels_max": "можно указать не больше {maximum} каналов",
        "filter_conflict": (
            "❌ Нельзя установить <code>{name}</code> = <code>{value}</code>: это противоречит другим вашим "
            "фильтрам (min_mcap не может быть больше max_mcap).\nНичего не сохранено."
        ),
        "paused": "⏸ Оповещения приостановлены. Отправьте /resume, чтобы снова их получать.",
        "already_paused": "Оповещения уже приостановлены. Отправьте /resume, чтобы снова их получать.",
        "resumed": "▶️ Оповещения возобновлены.",
        "already_active": "Оповещения уже включены.",
        "resumed_no_plan": "У вас нет активного тарифа, поэтому оповещения пока не придут: смотрите /plans.",
        # Отчёты (bot/reports.py) и их переключатель (bot/routers/reports.py).
        "report_period_day": "24 ч до {date} {time} UTC",
        "report_period_week": "7 дней до {date} {time} UTC",
        "report_na": "н/д",
        "report_more": "…и ещё {count}",
        "report_daily_title": "📊 <b>Ваши оповещения за день</b>\n{period}",
        "report_daily_summary": "Оповещений: {alerts} · дошли до 2x: {won}",
        "report_daily_best": "Лучший: <b>{symbol}</b> {peak}",
        "report_daily_line": "{n}. <b>{symbol}</b>: пик {peak} · сейчас {now}",
        "report_daily_chart": "Ваши оповещения · {date}",
        "report_best_title": "🏆 <b>Лучшее за день</b>\n{period}",
        "report_best_tokens": "<b>Токены</b>, пик после первого колла:",
        "report_best_token_line": "{n}. <b>{symbol}</b>: {peak} · сейчас {now} · каналов: {channels}",
        "report_best_channels": "<b>Каналы</b>, коллы с 2x (не меньше {min} коллов):",
        "report_best_channel_line": "{n}. {name}: {won}/{measured} · лучший {best}",
        "report_best_chart": "Лучшие токены · {date}",
        "report_weekly_title": "📅 <b>Каналы за неделю</b>\n{period}",
        "report_weekly_line": "{n}. {name}: успешных {rate} ({won}/{measured}) · среднее {mean} · медиана {median}",
        "report_weekly_note": (
            "Колл успешен, если токен после него уже дошёл до 2x (коллы недели молоды: пока что). "
            "Каналы, у которых не меньше {min} коллов с ценой; в среднем каждый колл считается не больше "
            "чем {cap}."
        ),
        "report_weekly_chart": "Доля успешных · неделя до {date}",
        "report_chart_peak": "пик",
        "report_chart_now": "сейчас",
        "button_reports": "📊 Отчёты: {state}",
        "reports_state_on": "включены",
        "reports_state_off": "выключены",
        "reports_screen": (
            "<b>Отчёты</b>\n"
            "• каждый день в 20:00 UTC: ваши оповещения за последние 24 часа, с пиковым и текущим "
            "множителем каждого токена после оповещения (в день без оповещений отчёта нет);\n"
            "• в 21:00 UTC: лучшие токены и каналы дня;\n"
            "• по понедельникам в 09:00 UTC: каналы за неделю.\n\n"
            "Отчёты <b>{state}</b>."
        ),
        "button_reports_on": "Включить отчёты",
        "button_reports_off": "Выключить отчёты",
        "admin_only": "⛔ Эта команда только для администраторов.",
        "health_title": "🩺 <b>Состояние: {status}</b>",
        "grant_usage": (
            "<b>Как использовать:</b> <code>/grant USER_ID ДНИ</code>: числовой id пользователя Telegram "
            "и от 1 до 3650 дней."
        ),
        "revoke_usage": "<b>Как использовать:</b> <code>/revoke USER_ID</code>: числовой id пользователя Telegram.",
        "user_unknown": "Пользователь <code>{user_id}</code> неизвестен: сначала он должен отправить боту /start.",
        "grant_done": "✅ Пользователю <code>{user_id}</code> выдано дней: {days}. Тариф активен до {expires}.",
        "grant_notice": "🎁 Вам выдано дней оповещений: {days}. Ваш тариф активен до {expires}.",
        "revoke_done": "✅ Тариф пользователя <code>{user_id}</code> отозван.",
        "revoke_none": "У <code>{user_id}</code> нет активного тарифа; ничего не изменилось.",
        "admin_menu": (
            "🛠 <b>Администрирование</b>\n"
            "/stats: пользователи, тарифы, оповещения, доставка, выручка\n"
            "/user USER_ID: карточка пользователя с кнопками выдачи, отзыва и бана\n"
            "/ban USER_ID, /unban USER_ID: прекратить или вернуть всё, что бот ему отправляет\n"
            "/payments: последние платежи по способам и статусам\n"
            "/channels: показатели каналов и число звонков за ними\n"
            "/export: пользователи, подписки и платежи в файлах CSV\n"
            "/broadcast ТЕКСТ: сообщение всем пользователям или их части\n"
            "/grant USER_ID ДНИ, /revoke USER_ID, /refund CHARGE_ID"
        ),
        "button_admin_stats": "📊 Статистика",
        "button_admin_payments": "💳 Платежи",
        "button_admin_channels": "📡 Каналы",
        "button_admin_export": "📦 Выгрузить CSV",
        "button_admin_menu": "⬅ Меню администратора",
        "stats_title": "📊 <b>Статистика</b>, {moment}",
        "stats_users": (
            "<b>Пользователи</b>: {total}: активны {active} (оповещения на паузе {paused}), забанены {banned}, "
            "заблокировали бота {blocked}; новых за 7 дней: {new}"
        ),
        "stats_plans": "<b>Действующие тарифы</b>: {plans}",
        "stats_none": "нет",
        "stats_alerts": "<b>Оповещения</b>: сегодня {today}, за 7 дней {week}",
        "stats_deliveries": "<b>Доставка сегодня</b>: отправлено {sent}, получатель недоступен {gone}, ошибки {failed}",
        "stats_revenue": "<b>Выручка</b> (подтверждённые платежи: за всё время; за 30 дней):",
        "stats_revenue_line": "• {rail}: {count} на {amount}; {count_30d} на {amount_30d}",
        "stats_revenue_none": "• пока нет",
        "user_usage": "<b>Как использовать:</b> <code>/user USER_ID</code>: числовой id пользователя Telegram.",
        "user_title": "👤 <b>Пользователь</b> <code>{user_id}</code> {name}",
        "user_profile": "Язык: {lang} · статус: {status} · с {since} · последний визит {seen}",
        "user_status_paused": "{status}, оповещения на паузе",
        "user_plan": "<b>Тариф</b>: {plan} до {expires}",
        "user_no_plan": "<b>Тариф</b>: нет",
        "user_alerts": (
            "<b>Оповещения</b>: {total} (за 7 дней {week}); доставка: отправлено {sent}, "
            "недоступен {gone}, ошибки {failed}"
        ),
        "user_filters": "<b>Фильтры</b>:",
        "user_filters_none": "<b>Фильтры</b>: нет, проходит любой звонок",
        "user_payments": "<b>Платежи</b>, сначала новые:",
        "user_payments_none": "<b>Платежи</b>: нет",
        "never": "никогда",
        "payment_line": "• {moment} · {rail} · {amount} · {status}{plan}",
        "payment_line_user": "• {moment} · <code>{user_id}</code> · {rail} · {amount} · {status}{plan}",
        "button_grant_30": "🎁 Выдать 30 дней",
        "button_revoke_plan": "⛔ Отозвать тариф",
        "button_ban": "🚫 Забанить",
        "button_unban": "✅ Разбанить",
        "ban_usage": "<b>Как использовать:</b> <code>/ban USER_ID</code>: числовой id пользователя Telegram.",
        "unban_usage": "<b>Как использовать:</b> <code>/unban USER_ID</code>: числовой id пользователя Telegram.",
        "ban_done": "🚫 <code>{user_id}</code> забанен: ни оповещений, ни рассылок, ни ответов.",
        "ban_already": "<code>{user_id}</code> уже забанен; ничего не изменилось.",
        "ban_admin": "<code>{user_id}</code> — администратор (ADMIN_IDS), его нельзя забанить.",
        "unban_done": "✅ <code>{user_id}</code> больше не забанен.",
        "unban_not_banned": "<code>{user_id}</code> не забанен; ничего не изменилось.",
        "admin_channels_title": (
            "📡 <b>Каналы</b> по собственным показателям бота, сначала самые измеренные (N: завершённых коллов)"
        ),
        "admin_channels_line": (
            "• {name}: N={resolved}, 2x у {wins} ({win_rate}), в среднем {avg}, медиана {median}; "
            "открыто {open}, без цен {unpriced}"
        ),
        "admin_channels_none": "Пока ни у одного канала нет завершённых коллов.",
        "payments_title": "💳 <b>Платежи</b>",
        "payments_counts": "<b>По способам и статусам</b>:",
        "payments_counts_line": "• {rail}: {statuses}",
        "payments_recent": "<b>Последние</b>:",
        "payments_none": "Платежей пока нет.",
        "export_caption": "{table}: строк {rows}",
        "export_sending": "Отправляю файлы CSV…",
        "broadcast_usage": (
            "<b>Как использовать:</b> <code>/broadcast ТЕКСТ</code>: текст вместе с оформлением уйдёт "
            "выбранной в предпросмотре аудитории, когда вы нажмёте «Отправить»."
        ),
        "broadcast_too_long": "❌ В тексте {length} символов; рассылка принимает не больше {limit}.",
        "broadcast_preview": (
            "📣 <b>Предпросмотр рассылки</b>: {audience}, пользователей: {count}. "
            "Выберите аудиторию и отправьте.\n\n{html}"
        ),
        "audience_all": "все",
        "audience_paying": "с тарифом",
        "audience_trial": "на пробном периоде",
        "audience_free": "без тарифа",
        "button_broadcast_send": "📣 Отправить: {count}",
        "broadcast_cancelled": "Рассылка отменена; ничего не отправлено.",
        "broadcast_gone": "Эта рассылка уже отправлена или отменена.",
        "broadcast_sending": "Отправляю…",
        "broadcast_progress": (
            "📣 <b>Рассылка</b> ({audience}): {handled} из {total}\n"
            "✅ отправлено {sent} · 🚫 заблокировали {blocked} · ❌ ошибки {failed}"
        ),
        "broadcast_done": (
            "📣 <b>Рассылка завершена</b> ({audience}): получателей {total}\n"
            "✅ отправлено {sent} · 🚫 заблокировали {blocked} · ❌ ошибки {failed}"
        ),
        "admincmd_admin": "Меню администратора",
        "admincmd_stats": "Пользователи, тарифы, оповещения, выручка",
        "admincmd_user": "Карточка пользователя: /user USER_ID",
        "admincmd_payments": "Последние платежи",
        "admincmd_channels": "Показатели каналов",
        "admincmd_export": "Пользователи, подписки, платежи в CSV",
        "admincmd_broadcast": "Рассылка: /broadcast ТЕКСТ",
        "admincmd_ban": "Забанить: /ban USER_ID",
        "admincmd_unban": "Снять бан: /unban USER_ID",
        "admincmd_grant": "Выдать дни: /grant USER_ID ДНИ",
        "admincmd_revoke": "Завершить тариф: /revoke USER_ID",
        "admincmd_refund": "Вернуть звёзды: /refund CHARGE_ID",
        "accepted_min_mcap": "сумма в USD, например 50000, 50k или 1.5m",
        "accepted_max_mcap": "сумма в USD, например 500k или 2m",
        "accepted_min_liquidity": "сумма в USD, например 10k",
        "accepted_min_holders": "целое число, например 100",
        "accepted_max_age": "минуты, например 30, 90m или 2h",
        "accepted_min_win_rate": "проценты от 0 до 100, например 40",
        "accepted_min_avg_gain": "множитель, например 2 или 2x",
        "accepted_channels": "id каналов или @username через запятую",
        "accepted_exclude_channels": "id каналов или @username через запятую",
        "accepted_min_channels": "целое число от 1 до 100, по умолчанию 1",
        "replay_working": "Проверяю ваши фильтры на последних 24 часах…",
        "replay_result": (
            "🔁 С вашими фильтрами за последние {hours} ч пришло бы оповещений: <b>{alerts}</b>; "
            "из них сделали 2x после оповещения: <b>{reached}</b>."
        ),
        "replay_result_one": (
            "🔁 С вашими фильтрами за последние {hours} ч пришло бы оповещений: <b>1</b>; "
            "из них сделали 2x после оповещения: <b>{reached}</b>."
        ),
        "replay_none": (
            "🔁 С вашими фильтрами за последние {hours} ч не пришло бы <b>ни одного</b> оповещения. "
            "Попробуйте ослабить фильтры: /filters покажет их, /unset уберёт фильтр."
        ),
        "replay_top_title": "<b>Лучшие из них:</b>",
        "replay_top_line": "• {symbol}: {multiple}",
        "replay_no_price": "нет цены после оповещения",
        "replay_partial": "ℹ️ История пока охватывает только {covered} ч, поэтому проверка покрывает меньше {hours} ч.",
        "replay_no_history": "ℹ️ Истории коллов пока нет, проверять фильтры не на чем. Попробуйте позже.",
        "replay_unavailable": "История коллов сейчас недоступна. Пожалуйста, попробуйте через минуту.",
        # ---- меню команд
        "cmd_start": "Приветствие и главное меню",
        "cmd_settings": "Настроить фильтры кнопками",
        "cmd_filters": "Ваши фильтры",
        "cmd_presets": "Готовые наборы фильтров",
        "cmd_status": "Ваш тариф, оповещения и фильтры",
        "cmd_plans": "Тарифы и цены",
        "cmd_pause": "Приостановить оповещения",
        "cmd_resume": "Возобновить оповещения",
        "cmd_language": "Выбрать язык",
        "cmd_help": "Что умеет бот",
        "cmd_privacy": "Какие данные хранятся; удалить их",
        "cmd_paysupport": "Помощь с оплатой",
        "cmd_channels": "Каналы с лучшим винрейтом",
        "channels_title": "📊 <b>Каналы с лучшим винрейтом</b>",
        "channels_line": (
            "{rank}. {name}: винрейт <b>{rate}</b> (завершённых коллов: {resolved}) · в среднем {avg} "
            "· медиана {median}{open}"
        ),
        "channels_open": " · ещё открыто: {count}",
        "channels_none": "Пока ни у одного канала нет {min} завершённых коллов.",
        "channels_few_title": "<b>Пока мало завершённых коллов для рейтинга</b> (меньше {min}):",
        "channels_few_line": "• {name}: 2x у {wins} из {resolved}",
        "channels_rules": (
            "<i>Считает сам бот от цены в момент колла. Колл завершён, когда дал 2x (успех) "
            "или прошло 7 дней (неудача); более свежие ещё открыты. В среднем пик каждого колла "
            "учитывается не выше {cap}.</i>"
        ),
        "channels_unavailable": "Статистика каналов сейчас недоступна. Пожалуйста, попробуйте через минуту.",
        # ---- меню
        "menu_title": "<b>Главное меню</b>\nЧто вы хотите сделать?",
        "menu_filters": "🎯 Фильтры",
        "menu_presets": "📦 Пресеты",
        "menu_plans": "💳 Тарифы",
        "menu_status": "📊 Статус",
        "menu_language": "🌐 Язык",
        "menu_help": "❓ Помощь",
        "button_back": "⬅ Назад",
        "button_cancel": "✖ Отмена",
        "button_replay": "🧪 Проверить фильтры на последних 24 часах",
        "button_reset_all": "♻ Сбросить все фильтры",
        "button_reset_one": "♻ Убрать этот фильтр",
        "button_delete_data": "🗑 Удалить мои данные",
        "button_delete_confirm": "🗑 Да, удалить всё",
        "label_min_mcap": "Мин. капитализация",
        "label_max_mcap": "Макс. капитализация",
        "label_min_liquidity": "Мин. ликвидность",
        "label_min_holders": "Мин. холдеров",
        "label_max_age": "Макс. возраст токена",
        "label_min_win_rate": "Мин. винрейт",
        "label_min_avg_gain": "Мин. средний рост",
        "label_channels": "Только каналы",
        "label_exclude_channels": "Исключить каналы",
        "label_min_channels": "Мин. каналов",
        "stale_button": "Эта кнопка устарела; вот меню заново.",
        "filters_screen_hint": "Нажмите на фильтр, чтобы изменить его.",
        "ask_value": (
            "Отправьте новое значение для <b>{label}</b> (<code>{name}</code>).\n"
            "Допустимо: {accepted}\nСейчас: {current}"
        ),
        "value_not_set": "не задан",
        "flow_try_again": "Отправьте другое значение или нажмите «Отмена».",
        "flow_cancelled": "Ничего не изменилось.",
        "reset_all_done": "✅ Все фильтры убраны: проходит каждый токен из коллов.",
        "status_title": "<b>Ваш статус</b>",
        "status_plan_active": "Тариф: активен до {date} (осталось дней: {days})",
        "status_plan_none": "Тариф: нет; оповещения приходят с тарифом, смотрите /plans",
        "status_plan_admin": "Тариф: администратор, оповещения всегда включены",
        "status_alerts_on": "Оповещения: включены",
        "status_alerts_paused": "Оповещения: на паузе (/resume)",
        "status_alerts_today": "Оповещений сегодня: {count}",
        "status_preset": "Пресет: {preset}",
        "status_filters_none": "Фильтры: нет, проходит каждый токен из коллов",
        "status_invite": "Пригласите друзей: {link} (пришло: {count})",
        "followup": (
            "🚀 <b>{multiple}x</b> по <b>{symbol}</b> с момента вашего оповещения\n"
            "💰 Капитализация: {base} → <b>{now}</b>\n"
            "🏔 Максимум: {peak}\n"
            "<code>{address}</code>"
        ),
        "followup_unknown": "неизвестно",
        "status_followups": "Иксы после оповещения: {choice}",
        "button_followups": "🔔 Иксы: {choice}",
        "followups_title": (
            "<b>Иксы после оповещения</b>\n"
            "После оповещения я сообщаю, когда капитализация токена вырастет в 2, 3, 5, 10, 20, 50 "
            "или 100 раз от той, что была при вашем оповещении: о каждом иксе один раз, при скачке "
            "через несколько только о самом большом, ответом на оповещение, 7 дней или пока токен "
            "не умрёт.\n\n"
            "Сейчас: <b>{choice}</b>"
        ),
        "followups_saved": "✅ Иксы после оповещения: {choice}",
        "followups_choice_all": "все",
        "followups_choice_5": "от 5x",
        "followups_choice_10": "от 10x",
        "followups_choice_off": "выключены",
        "followups_choice_from": "от {multiple}x",
        "language_title": "Выберите язык:",
        "language_set": "✅ Язык: русский",
        "privacy": (
            "<b>Что бот хранит о вас</b>\n"
            "• ваш id в Telegram, имя пользователя, имя и язык;\n"
            "• ваши фильтры, историю их изменений и пресет, на который вы подписаны;\n"
            "• отправленные вам оповещения (токен, время, капитализация) и их множители;\n"
            "• ваш тариф и платежи (платежи остаются для бухгалтерии, но без вашего id, "
            "после удаления данных);\n"
            "• кто вас пригласил и кого пригласили вы.\n\n"
            "Ничего не передаётся третьим лицам. Кнопка ниже удаляет всё это."
        ),
        "privacy_confirm": (
            "<b>Удалить все ваши данные?</b>\n"
            "Удалятся фильтры, история и оповещения, а также тариф, даже оплаченный. "
            "Отменить это нельзя; позже /start начнёт всё заново."
        ),
        "privacy_deleted": "🗑 Готово: всё, что бот хранил о вас, удалено. Отправьте /start, чтобы начать заново.",
        "privacy_cancelled": "Ничего не удалено.",
        "paysupport": (
            "<b>Помощь с оплатой</b>\n"
            "Опишите проблему одним сообщением, начав его с /paysupport, например:\n"
            "<code>/paysupport оплатил 0.09 SOL, тариф не активен, tx 5Kd…</code>\n"
            "Оно сразу уйдёт команде вместе с вашим id, а ответ придёт сюда."
        ),
        "paysupport_sent": "✅ Отправлено команде. Ответ придёт в этот чат.",
        "paysupport_to_admin": "💬 <b>Вопрос по оплате</b> от {user} (<code>{user_id}</code>):\n{message}",
        "paysupport_no_admins": "Сейчас некому принять вопрос по оплате. Пожалуйста, попробуйте позже.",
        "monitor_started": "🔄 <b>Бот запущен</b> на <code>{instance}</code> (версия {version}). {previous}",
        "monitor_previous_first": "Первый запуск этого экземпляра.",
        "monitor_previous_clean": "Предыдущий запуск завершился штатно в {at}.",
        "monitor_previous_unclean": (
            "⚠ Предыдущий запуск оборвался без штатной остановки; последний раз был на связи {at}."
        ),
        "monitor_previous_unknown": "Redis недоступен, поэтому неизвестно, как завершился предыдущий запуск.",
        "monitor_redis_opened": (
            "🔴 <b>Redis неисправен</b> уже {duration} на <code>{instance}</code>. Бот отвечает из памяти "
            "и отправляет оповещения напрямую; подробности в rediserror.log."
        ),
        "monitor_redis_recovered": "🟢 <b>Redis снова работает</b> на <code>{instance}</code> спустя {duration}.",
        "monitor_stream_opened": (
            "🔴 <b>Поток {feed} недоступен</b> уже {duration} на <code>{instance}</code>: кадры не приходят. "
            "Бот продолжает переподключаться сам."
        ),
        "monitor_stream_recovered": (
            "🟢 <b>Поток {feed} снова работает</b> на <code>{instance}</code> спустя {duration}."
        ),
        "monitor_queue_opened": (
            "🟠 <b>Очередь событий заполнена на {percent}%</b> ({depth} из {capacity}) на <code>{instance}</code>: "
            "обработка отстаёт от потока."
        ),
        "monitor_queue_recovered": (
            "🟢 <b>Очередь событий</b> на <code>{instance}</code> снова заполнена на {percent}% "
            "({depth} из {capacity}), спустя {duration}."
        ),
        "monitor_memory_opened": (
            "🟠 <b>Память: {percent}%</b> лимита ({used_mb} из {limit_mb} МБ) на <code>{instance}</code>."
        ),
        "monitor_memory_recovered": (
            "🟢 <b>Память</b> на <code>{instance}</code> снова {percent}% ({used_mb} из {limit_mb} МБ), "
            "спустя {duration}."
        ),
        "monitor_rate_limited_opened": (
            "🟠 <b>Telegram продолжает отвечать 429</b>: {count} за последние {window} на <code>{instance}</code>. "
            "Отправка ждёт столько, сколько просит Telegram."
        ),
        "monitor_rate_limited_recovered": (
            "🟢 <b>Ответов 429 нет</b> уже {window} на <code>{instance}</code>; инцидент длился {duration}."
        ),
        "monitor_failures_opened": (
            "🟠 <b>Доставки продолжают срываться</b>: {count} за последние {window} на <code>{instance}</code>; "
            "см. bot.log (alertbot.sender)."
        ),
        "monitor_failures_recovered": (
            "🟢 <b>Сорванных доставок нет</b> уже {window} на <code>{instance}</code>; инцидент длился {duration}."
        ),
        "duration_seconds": "{n} с",
        "duration_minutes": "{n} мин",
        "duration_hours": "{h} ч {m} мин",
        "paysupport_wait": (
            "⏳ Ваше прошлое сообщение ушло команде меньше минуты назад, поэтому это не отправлено. "
            "Написать снова можно через {seconds} с; ответ на первое придёт сюда."
        ),
        "plans_title": "<b>Тарифы</b>\nТариф включает оповещения на свой срок; дни суммируются.",
        "notice_receipt": "🧾 <b>Оплата получена</b>\nТариф: оповещения на {days} дн.\n"
        "Оплачено: {amount} {currency}\nОповещения включены до {plan_end}.",
        "notice_partial": "⚠️ Получено {paid} {currency}, не хватает {missing} {currency} до цены. "
        "Отправьте остаток по тому же запросу на оплату, и заказ будет оплачен.",
        "notice_rejected": "⚠️ Этот платёж не удалось зачесть: {reason}. Напишите в /paysupport, и мы разберёмся.",
        "notice_reminder_3d": "⏳ Ваш тариф закончится через 3 дня ({plan_end}). "
        "Продлите его, чтобы оповещения не прерывались.",
        "notice_reminder_1d": "⏳ Ваш тариф закончится завтра ({plan_end}). "
        "Продлите его, чтобы оповещения не прерывались.",
        "notice_plan_ended": "Ваш тариф закончился, оповещения остановлены. "
        "Продлить можно в любой момент: фильтры сохранены.",
        "notice_referral_reward": "🎁 Приглашённый вами пользователь оплатил тариф: "
        "вам начислено дней оповещений: {days}. Ваш тариф активен до {plan_end}.",
        "button_renew": "💳 Продлить",
        "button_trial": "🎁 {days} дн. бесплатно",
        "trial_started": "🎁 Пробный период включён: оповещения до {plan_end}. "
        "Настройте фильтры, чтобы получать нужное.",
        "trial_used": "Пробный период уже был использован. Смотрите /plans, чтобы оповещения продолжались.",
        "notice_not_paid": "⚠️ Транзакция <code>{signature}</code> ничего не оплатила по вашему заказу: {why}.",
        "verdict_paid": "она оплачена",
        "verdict_underpaid": "она оплатила меньше цены",
        "verdict_failed": "она не прошла в сети, SOL не переведены",
        "verdict_no_reference": "в ней нет ссылки вашего заказа",
        "verdict_not_received": "она ничего не перевела на кошелёк бота",
        "verdict_not_found": "она ещё не подтверждена; попробуйте через минуту",
        "verdict_malformed": "это не транзакция, которую можно прочитать",
        "plans_none": "Сейчас тарифов нет.",
        "plan_card": "<b>{title}</b>: оповещения на {days} дн.\nЦена: {prices}",
        "plan_unknown": "Тарифа <code>{code}</code> нет; вот доступные тарифы.",
        "plan_how_to_pay": "Вопросы по оплате: /paysupport",
        # ---- покупка тарифа (bot/routers/payments.py)
        "plan_choose_rail": "Выберите способ оплаты:",
        "button_buy_stars": "⭐ Оплатить {amount} звёздами Telegram",
        "button_buy_sol": "◎ Оплатить {amount} в SOL",
        "button_buy_nowpayments": "💠 Оплатить {amount} криптовалютой",
        "button_monthly": "🔁 Помесячно (автопродление): {amount} в месяц",
        "order_title": "🧾 <b>Заказ</b> <code>{order_id}</code>",
        "order_plan": "Тариф: <b>{title}</b> (дней: {days})",
        "order_amount": "Сумма: <b>{amount}</b>",
        "order_paid_part": "Уже оплачено: {paid}",
        "order_expires": "Оплатить до: {expires}",
        "order_status": "Статус: {status}",
        "order_status_open": "⏳ ждём оплату",
        "order_status_partial": "◐ оплачен частично, ждём остаток",
        "order_status_paid": "✅ оплачен",
        "order_status_cancelled": "✖ отменён",
        "order_status_expired": "⌛ истёк, ничего не списано",
        "order_hint_stars": "Оплатите счёт ниже; тариф включится, как только Telegram подтвердит оплату.",
        "order_hint_sol": (
            "Отправьте ровно <b>{amount}</b> из кошелька с Solana Pay: отсканируйте QR-код или откройте\n"
            "<code>{url}</code>"
        ),
        "order_hint_nowpayments": (
            "Оплатите на странице NOWPayments (кнопка ниже); тариф включится после подтверждения."
        ),
        "button_open_payment_page": "💠 Открыть страницу оплаты",
        "button_refresh": "🔄 Обновить",
        "button_cancel_order": "✖ Отменить заказ",
        "button_plans": "⬅ Тарифы",
        "order_cancelled": "✖ Заказ отменён. Ничего не списано.",
        "order_not_cancellable": "Этот заказ уже нельзя отменить.",
        "order_gone": "Такого заказа нет или он не ваш; вот тарифы.",
        "order_rail_unavailable": "Этот способ оплаты сейчас недоступен. Выберите другой или попробуйте позже.",
        "payments_unavailable": "Оплата сейчас не принимается. Ничего не списано; попробуйте через несколько минут.",
        "invoice_title": "{title}",
        "invoice_description": "Оповещения Token Alert Bot на {days} дн. (заказ {order_id}).",
        "subscription_title": "{title}, помесячно",
        "subscription_description": (
            "Оповещения Token Alert Bot, продлеваются каждые 30 дней, пока вы не отмените в /status."
        ),
        "subscription_offer": (
            "🔁 <b>Помесячно (автопродление)</b>\n<b>{title}</b>: {amount} каждые 30 дней. Telegram продлевает "
            "подписку, пока вы не отмените её в /status; каждое продление добавляет к тарифу 30 дней."
        ),
        "button_subscribe": "⭐ Подписаться за {amount} в месяц",
        "precheckout_unknown": "Этот счёт больше не действует. Начните заново в /plans.",
        "precheckout_not_yours": "Этот счёт выставлен другому человеку. Купите свой тариф в /plans.",
        "precheckout_closed": "Этот заказ уже оплачен, отменён или истёк. Создайте новый в /plans.",
        "precheckout_amount": "Сумма не совпадает с заказом. Начните заново в /plans.",
        "precheckout_unavailable": "Сейчас не удаётся проверить оплату. Ничего не списано; попробуйте через минуту.",
        "receipt_pending": "✅ Оплата получена. Тариф включается; как только он включится, здесь придёт сообщение.",
        "status_subscription": "Автопродление: {amount} каждые 30 дней, следующее {date}",
        "status_subscription_canceled": "Автопродление: отключено; оплачено до {date}",
        "button_cancel_autorenew": "✖ Отключить автопродление",
        "unsub_confirm": (
            "<b>Отключить автопродление?</b>\nTelegram больше не будет списывать оплату; тариф останется "
            "активным до {date}."
        ),
        "button_unsub_confirm": "✖ Да, отключить автопродление",
        "button_keep": "Оставить",
        "unsub_done": "✅ Автопродление отключено. Тариф активен до {date}.",
        "unsub_none": "У вас нет подписки с автопродлением.",
        "unsub_failed": "Telegram сейчас не принял отмену. Попробуйте через минуту.",
        "refund_usage": (
            "<b>Как использовать:</b> <code>/refund CHARGE_ID</code>: telegram_payment_charge_id платежа звёздами "
            "(есть в журнале платежей и в обращении пользователя)."
        ),
        "refund_unknown": "Платёж звёздами <code>{charge_id}</code> неизвестен; ничего не изменилось.",
        "refund_failed": "Telegram отказал в возврате <code>{charge_id}</code>: {error}. Ничего не изменилось.",
        "refund_done": (
            "✅ Платёж <code>{charge_id}</code> возвращён пользователю <code>{user_id}</code>; его тариф завершён."
        ),
        "refund_already": (
            "Telegram уже вернул <code>{charge_id}</code>; тариф пользователя <code>{user_id}</code> завершён."
        ),
        "refund_notice": "↩ Ваш платёж звёздами возвращён, тариф завершён.",
        "throttled": "⏳ Вы действуете слишком быстро. Подождите несколько секунд, и следующее нажатие сработает.",
        # ---- пресеты (bot/routers/presets.py)
        "presets_title": (
            "<b>📦 Пресеты</b>\nГотовые наборы фильтров. <b>Применить</b> копирует набор в ваши фильтры; "
            "<b>Подписаться</b> тоже, и ещё меняет ваши фильтры вслед за пресетом, когда его меняет администратор."
        ),
        "presets_none": "Пресетов пока нет.",
        "preset_following": "вы подписаны на этот пресет",
        "preset_no_filters": "без фильтров: проходит каждый токен из коллов",
        "preset_button_apply": "✅ Применить {title}",
        "preset_button_follow": "🔔 Подписаться",
        "preset_button_unfollow": "🔕 Отписаться",
        "preset_button_back": "⬅ Назад",
        "preset_applied": "✅ Пресет <b>{title}</b> применён. Ваши фильтры теперь:\n{filters}",
        "preset_followed": (
            "🔔 Вы подписаны на пресет <b>{title}</b>: когда администратор его меняет, ваши фильтры "
            "меняются вместе с ним. Если вы сами измените фильтр, подписка прекратится.\n"
            "Ваши фильтры теперь:\n{filters}"
        ),
        "preset_unfollowed": "🔕 Вы отписались от пресета <b>{title}</b>. Ваши фильтры остались прежними.",
        "preset_gone": "Этого пресета больше нет; вот актуальные.",
        "preset_not_followed": "Вы не подписаны на этот пресет.",
        "preset_changed_notice": (
            "🔔 Администратор изменил пресет <b>{title}</b>, на который вы подписаны, поэтому изменились "
            "и ваши фильтры. Теперь они такие:\n{filters}\n\n"
            "Чтобы оставить свои фильтры, измените любой командой /set: подписка прекратится."
        ),
        "preset_deleted_notice": (
            "Пресет <b>{title}</b>, на который вы были подписаны, удалён. Ваши фильтры остались прежними; "
            "другие пресеты смотрите в /presets."
        ),
        "setpreset_usage": (
            '<b>Как использовать:</b> <code>/setpreset КОД "Название" ["Описание"] ИМЯ=ЗНАЧЕНИЕ ...</code>\n'
            'например <code>/setpreset safe "Safe" min_mcap=50k min_liquidity=15k min_win_rate=45</code>\n'
            "КОД: от 1 до 24 символов a-z, 0-9, _. Перечисленные фильтры становятся всем набором пресета "
            "(имена и значения как в /set). Без названия или описания у пресета остаются прежние."
        ),
        "setpreset_current": "<b>Пресеты сейчас</b> (скопируйте, чтобы изменить):\n{definitions}",
        "setpreset_error": "❌ {reason}.\nНичего не сохранено.\n\n{usage}",
        "setpreset_created": "✅ Пресет <code>{code}</code> (<b>{title}</b>) создан:\n{filters}",
        "setpreset_changed": (
            "✅ Пресет <code>{code}</code> (<b>{title}</b>) сохранён:\n{filters}\n"
            "Подписчиков обновлено и уведомлено: {updated}."
        ),
        "setpreset_followers_failed": (
            "⚠ Часть подписчиков сейчас обновить не удалось (см. лог); "
            "позже отправьте тот же /setpreset {code} ещё раз, чтобы закончить."
        ),
        "delpreset_usage": (
            "<b>Как использовать:</b> <code>/delpreset КОД</code>, например <code>/delpreset degen</code>"
        ),
        "delpreset_unknown": "Пресета <code>{code}</code> нет; ничего не изменилось.",
        "delpreset_done": (
            "✅ Пресет <code>{code}</code> (<b>{title}</b>) удалён. "
            "Уведомлено подписчиков (их фильтры остались): {followers}."
        ),
    },
}


def format_moment(moment: datetime) -> str:
    """A moment as every message shows it: 2026-12-02 20:00 UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def money(amount: Decimal, currency: str) -> str:
    """An amount as the screens show it: 750 ⭐, 0.09 SOL, $15 (or $12.50)."""
    if currency == "XTR":
        return f"{int(amount)} ⭐"
    if currency == "USD":
        return f"${int(amount)}" if amount == amount.to_integral_value() else f"${amount.quantize(Decimal('0.01'))}"
    return f"{amount.normalize():f} {currency}"


def duration(seconds: float, language: str | None = None) -> str:
    """A duration as the admins read it: 45 s, 5 min, 2 h 5 min (in the language's words)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return text("duration_seconds", language, n=whole)
    if whole < 3600:
        return text("duration_minutes", language, n=whole // 60)
    hours, minutes = divmod(whole // 60, 60)
    return text("duration_hours", language, h=hours, m=minutes)


def pick_language(language_code: str | None) -> str:
    """The bot's language for a Telegram `language_code` such as 'ru' or 'en-GB': the code as
    users.language keeps it, where the bot speaks it."""
    base = language_of(language_code)
    return base if base in TEXTS else DEFAULT_LANGUAGE


def text(key: str, language: str | None = None, **values: object) -> str:
    table = TEXTS.get(language or DEFAULT_LANGUAGE, TEXTS[DEFAULT_LANGUAGE])
    template = table.get(key, TEXTS[DEFAULT_LANGUAGE][key])
    return template.format(**values) if values else template
