from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import Group
from django.utils.translation import gettext_lazy as _

User = get_user_model()


class GroupsForm(forms.Form):
    groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple
    )


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150, label=_("Login"))
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(required=False)
    password = forms.CharField(widget=forms.PasswordInput, label=_("Password"))
    groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple
    )

    def clean_username(self):
        username = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(_("A user with this login already exists: choose another login."))
        return username

    def clean(self):
        data = super().clean()
        if data.get("password"):
            candidate = User(username=data.get("username", ""), email=data.get("email", ""))
            try:
                password_validation.validate_password(data["password"], candidate)
            except forms.ValidationError as e:
                self.add_error("password", e)
        return data


class ThrottledAuthenticationForm(AuthenticationForm):
    """The login form, throttled per username and client address (accounts/throttle.py)."""

    throttled = False

    def clean(self):
        from .throttle import SignInThrottled, sign_in

        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username is None or not password:
            return self.cleaned_data
        try:
            self.user_cache = sign_in(request=self.request, username=username, password=password)
        except SignInThrottled as e:
            self.throttled = True
            raise forms.ValidationError(e.message, code="throttled") from None
        if self.user_cache is None:
            raise self.get_invalid_login_error()
        self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data
