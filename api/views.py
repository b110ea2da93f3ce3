from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from accounts.roles import SIGNED_IN
from accounts.selectors import user_list
from accounts.services import user_groups_set
from accounts.throttle import sign_in

from .authentication import token_expired
from .serializers import (
    ErrorSerializer,
    GroupsInputSerializer,
    MeSerializer,
    TokenInputSerializer,
    TokenSerializer,
    UserSerializer,
)

User = get_user_model()
ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer, 409: ErrorSerializer}


class TokenView(APIView):
    """Exchange a login and password for an API token (send it as `Authorization: Token <key>`)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=TokenInputSerializer,
        responses={200: TokenSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 429: ErrorSerializer},
        description="Failed tries are throttled per login and per client address (429 says how long to wait).",
    )
    def post(self, request):
        data = TokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = sign_in(request=request, username=data.validated_data["username"], password=data.validated_data["password"])
        if user is None:
            raise AuthenticationFailed("The login or password is wrong.")
        token, _ = Token.objects.get_or_create(user=user)
        if token_expired(token):
            token.delete()
            token = Token.objects.create(user=user)
        return Response({"token": token.key})

    def get_authenticate_header(self, request):
        return 'Token realm="api"'


class MyTokenView(APIView):
    """Revoke your own API token (the next POST /api/auth/token/ makes a new one)."""

    access = SIGNED_IN

    @extend_schema(request=None, responses={204: None, **ERRORS})
    def delete(self, request):
        Token.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserTokenView(APIView):
    """Revoke a user's API token (Administration)."""

    access = "administer"

    @extend_schema(request=None, responses={204: None, **ERRORS})
    def delete(self, request, pk: int):
        user = get_object_or_404(User, pk=pk)
        Token.objects.filter(user=user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    """The signed-in user, their groups and roles."""

    access = SIGNED_IN

    @extend_schema(responses={200: MeSerializer, **ERRORS})
    def get(self, request):
        return Response(MeSerializer(request.user).data)


class UserListView(generics.ListAPIView):
    """Users with their groups and roles (Administration)."""

    access = "administer"
    serializer_class = UserSerializer

    def get_queryset(self):
        return user_list()


class UserGroupsView(APIView):
    """Replace a user's groups (Administration). Audited; the last administrator cannot be removed."""

    access = "administer"

    @extend_schema(request=GroupsInputSerializer, responses={200: UserSerializer, **ERRORS})
    def put(self, request, pk: int):
        user = get_object_or_404(User, pk=pk)
        data = GroupsInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user_groups_set(actor=request.user, user=user, groups=data.validated_data["groups"], source="api")
        return Response(UserSerializer(user_list().get(pk=user.pk)).data, status=status.HTTP_200_OK)


TokenView.throttle_classes = [AnonRateThrottle]
