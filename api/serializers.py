from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.selectors import roles_of_groups, user_roles

from .schema import ErrorSerializer, ValidationErrorSerializer  # noqa: F401 - one definition, used by views

User = get_user_model()


class RoleSerializer(serializers.Serializer):
    codename = serializers.CharField()
    perm = serializers.CharField()
    name = serializers.CharField()


class UserSerializer(serializers.ModelSerializer):
    groups = serializers.SerializerMethodField()
    roles = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name", "email", "is_active", "groups", "roles"]

    def get_groups(self, obj) -> list[str]:
        return [g.name for g in obj.groups.all()]

    def get_roles(self, obj) -> list[str]:
        return [r.perm for r in roles_of_groups(obj.groups.all())]


class MeSerializer(serializers.ModelSerializer):
    groups = serializers.SerializerMethodField()
    roles = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name", "email", "groups", "roles"]

    def get_groups(self, obj) -> list[str]:
        return sorted(obj.groups.values_list("name", flat=True))

    @extend_schema_field(RoleSerializer(many=True))
    def get_roles(self, obj):
        return RoleSerializer(user_roles(user=obj), many=True).data


class GroupsInputSerializer(serializers.Serializer):
    groups = serializers.ListField(child=serializers.CharField(), allow_empty=True, help_text="Group names.")


class TokenInputSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
