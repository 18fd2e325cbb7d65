"""The unit's local web page and JSON API (Flask), served from a thread beside the asyncio loop."""
