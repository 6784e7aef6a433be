from django.utils import translation


class UserLanguageMiddleware:
    """A signed-in user's chosen language wins over the browser's (after LocaleMiddleware)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            language = getattr(getattr(user, "preference", None), "language", "")
            if language:
                translation.activate(language)
                request.LANGUAGE_CODE = language
        return self.get_response(request)
