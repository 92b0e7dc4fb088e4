"""What Eve writes for a reader: `writers` (JSON and CSV), `prose` (the methods paragraph and the
results, written from a report's own metadata), `html` (the standalone page, with its style and script
as files beside it) and `figures` (the plotly figures the app and the page share)."""
