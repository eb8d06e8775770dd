"""Reports for people: the HTML page of a window's footage, labels and failures."""
