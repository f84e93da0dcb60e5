"""The one pagination of the API (its own module: DRF loads it from settings while
``rest_framework.viewsets`` is still importing)."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

from config.filtering import single_value


class ApiPagination(PageNumberPagination):
    """``{"count", "next", "previous", "results"}``; ``?page_size=`` up to 500 (more is
    read as 500); a ``page_size`` that is not a whole number from 1 is a 400, a page
    that does not exist a 404."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request):
        raw = single_value(request, self.page_size_query_param)
        if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise ValidationError({self.page_size_query_param: ["A whole number from 1 is required."]})
        return super().get_page_size(request)

    def paginate_queryset(self, queryset, request, view=None):
        single_value(request, self.page_query_param)
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] in (self.page_query_param, self.page_size_query_param):
                parameter["schema"]["minimum"] = 1
        return parameters
