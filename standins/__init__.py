"""Local servers that speak Telegram's, the feed's and Solana's wire formats.

The demo, the benches and the tests run the real bot against them: a Bot API server enforcing
Telegram's limits (`standins.telegram`), the alert feed and a recorded sample of it
(`feed_server`, `feedgen`), a Solana JSON-RPC node (`solana_rpc`), a TCP proxy that fakes an
outage (`tcp_proxy`), and the alerts a feed should produce (`oracle`). The bot's runtime never
imports them; only `alertbot demo` does.
"""
