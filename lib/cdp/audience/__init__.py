"""Audiences (人群圈选): rules over profile and tags, filtered by consent for their purpose."""
