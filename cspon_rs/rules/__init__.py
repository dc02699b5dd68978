"""Warning rules: classify change patches against permits and control lines."""
