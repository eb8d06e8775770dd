"""The review app: find a person or vehicle across the fleet and watch it.

Search tracked objects by recorder, channel, label, time and score; each with its thumbnail; an
object's page plays its clip from the object's second; per channel a day's timeline and hourly
counts, with the runs that failed and the hours not done; the same searches as JSON. Login
required. Reads ClickHouse through the sink block's reads only and files from the video store.

    NVRFLOW_REVIEW_PASSWORD=... python -m review --host 127.0.0.1 --port 8600
"""
