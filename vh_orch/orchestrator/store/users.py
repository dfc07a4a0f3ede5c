"""Users, API tokens, project owners and members: who may see what."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import ApiToken, Project, ProjectMember, User
from vh_orch.orchestrator.store.database import Database
from vh_orch.orchestrator.users import same_digest
from vh_orch.timeutil import as_utc, utcnow

ADMIN = "admin"  # the administrator every installation starts with (migration 0003)


class UsersStore(Database):

    # -- users --------------------------------------------------------------------

    def create_user(self, name: str, is_admin: bool = False, password_hash: str | None = None) -> User:
        try:
            with self.write() as s:
                user = User(name=name, is_admin=is_admin, password_hash=password_hash)
                s.add(user)
                s.flush()
                return user
        except IntegrityError:
            raise UserInputError(f"a user named {name!r} already exists; see `vh-orch user list`") from None

    def get_user(self, name: str) -> User:
        with self.read() as s:
            return _user_named(s, name)

    def find_user(self, name: str) -> User | None:
        with self.read() as s:
            return s.exec(select(User).where(User.name == name)).first()

    def list_users(self) -> list[tuple[User, int, int]]:
        """Every user with how many projects they own and how many live tokens they have."""
        with self.read() as s:
            owned = dict(s.exec(select(Project.owner_id, func.count()).group_by(Project.owner_id)).all())
            tokens = dict(s.exec(select(ApiToken.user_id, func.count()).group_by(ApiToken.user_id)).all())
            users = list(s.exec(select(User).order_by(User.name)))
        return [(u, owned.get(u.id, 0), tokens.get(u.id, 0)) for u in users]

    def remove_user(self, name: str) -> None:
        with self.write() as s:
            user = _user_named(s, name)
            if user.is_admin:
                admins = s.exec(select(func.count()).select_from(User).where(col(User.is_admin))).one()
                if admins <= 1:
                    raise UserInputError(f"{name} is the last administrator: make another one first "
                                         "(`vh-orch user add NAME --admin`)")
            owned = list(s.exec(select(Project.name).where(Project.owner_id == user.id).order_by(Project.name)))
            if owned:
                raise UserInputError(
                    f"{name} owns {len(owned)} project(s) ({', '.join(owned[:5])}): "
                    f"give each another owner first (`vh-orch project chown PROJECT USER`)"
                )
            s.exec(delete(ApiToken).where(col(ApiToken.user_id) == user.id))  # type: ignore[call-overload]
            s.exec(delete(ProjectMember).where(col(ProjectMember.user_id) == user.id))  # type: ignore[call-overload]
            s.delete(user)

    def set_password(self, name: str, password_hash: str | None, keep_digest: str | None = None) -> int:
        """Set a user's password and, in the same transaction, end every API token and browser session
        of theirs but the one whose digest is `keep_digest` (the one the change was made with, if any):
        whoever knew the old password may have made some. Returns how many were ended."""
        with self.write() as s:
            user = _user_named(s, name)
            user.password_hash = password_hash
            s.add(user)
            ended = delete(ApiToken).where(col(ApiToken.user_id) == user.id)
            if keep_digest is not None:
                ended = ended.where(col(ApiToken.digest) != keep_digest)
            return int(s.exec(ended).rowcount or 0)  # type: ignore[call-overload]

    # -- tokens -------------------------------------------------------------------

    def add_token(self, user_id: int, digest: str, kind: str = "api", expires_at: datetime | None = None
                  ) -> ApiToken:
        with self.write() as s:
            token = ApiToken(user_id=user_id, digest=digest, kind=kind, expires_at=expires_at)
            s.add(token)
            s.flush()
            return token

    def revoke_tokens(self, user_id: int) -> int:
        with self.write() as s:
            result = s.exec(delete(ApiToken).where(col(ApiToken.user_id) == user_id))  # type: ignore[call-overload]
            return int(result.rowcount or 0)

    def user_for_token(self, digest: str) -> User | None:
        """The user a token's digest belongs to, or None (unknown or revoked)."""
        with self.read() as s:
            row = s.exec(select(ApiToken, User).join(User, col(User.id) == ApiToken.user_id)
                         .where(ApiToken.digest == digest)).first()
        if row is None or not same_digest(row[0].digest, digest):
            return None
        expires = row[0].expires_at
        if expires is not None and as_utc(expires) <= utcnow():
            return None
        return row[1]

    def end_token(self, digest: str) -> None:
        """Forget one token (a browser signing out)."""
        with self.write() as s:
            s.exec(delete(ApiToken).where(col(ApiToken.digest) == digest))  # type: ignore[call-overload]

    # -- ownership ----------------------------------------------------------------

    def admin_user(self) -> User:
        """The installation's first administrator: the owner of projects made without one."""
        with self.read() as s:
            user = s.exec(select(User).where(col(User.is_admin)).order_by(col(User.id))).first()
        if user is None:
            raise UserInputError("this installation has no administrator: run `vh-orch user add NAME --admin`")
        return user

    def visible_projects(self, user: User) -> list[Project]:
        """The projects a user owns or is a member of; every project for an administrator."""
        query = select(Project).order_by(Project.name)
        if not user.is_admin:
            members = select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)
            query = query.where(or_(Project.owner_id == user.id, col(Project.id).in_(members)))
        with self.read() as s:
            return list(s.exec(query))

    def can_see(self, user: User, project_id: int) -> bool:
        if user.is_admin:
            return True
        with self.read() as s:
            project = s.get(Project, project_id)
            if project is None:
                return False
            if project.owner_id == user.id:
                return True
            return s.get(ProjectMember, (project_id, user.id)) is not None

    def project_people(self) -> dict[int, tuple[str, list[str]]]:
        """For every project id: its owner's name and its members' names."""
        with self.read() as s:
            names = dict(s.exec(select(User.id, User.name)).all())
            owners = {p: names.get(o, "?") for p, o in s.exec(select(Project.id, Project.owner_id)).all()}
            members: dict[int, list[str]] = {}
            for project_id, user_id in s.exec(select(ProjectMember.project_id, ProjectMember.user_id)):
                members.setdefault(project_id, []).append(names.get(user_id, "?"))
        return {p: (owner, sorted(members.get(p, []))) for p, owner in owners.items()}

    def share_project(self, project_name: str, user_name: str) -> bool:
        """Make a user a member; False if they already could see it (a member, or the owner)."""
        with self.write() as s:
            project, user = self._project_and_user(s, project_name, user_name)
            if project.owner_id == user.id or s.get(ProjectMember, (project.id, user.id)) is not None:
                return False
            s.add(ProjectMember(project_id=project.id, user_id=user.id))
            return True

    def unshare_project(self, project_name: str, user_name: str) -> bool:
        with self.write() as s:
            project, user = self._project_and_user(s, project_name, user_name)
            if project.owner_id == user.id:
                raise UserInputError(f"{user_name} owns {project_name}: give it another owner first "
                                     f"(`vh-orch project chown {project_name} USER`)")
            member = s.get(ProjectMember, (project.id, user.id))
            if member is None:
                return False
            s.delete(member)
            return True

    def chown_project(self, project_name: str, user_name: str) -> None:
        """Give a project another owner; the previous owner stays a member (nothing is taken away)."""
        with self.write() as s:
            project, user = self._project_and_user(s, project_name, user_name)
            if project.owner_id == user.id:
                return
            previous = project.owner_id
            membership = s.get(ProjectMember, (project.id, user.id))
            if membership is not None:
                s.delete(membership)
            if s.get(ProjectMember, (project.id, previous)) is None:
                s.add(ProjectMember(project_id=project.id, user_id=previous))
            project.owner_id = user.id  # type: ignore[assignment]
            s.add(project)

    @staticmethod
    def _project_and_user(s, project_name: str, user_name: str) -> tuple[Project, User]:  # type: ignore[no-untyped-def]
        project = s.exec(select(Project).where(Project.name == project_name)).first()
        if project is None:
            raise NotFound(f"no project named {project_name!r}; see `vh-orch project list`")
        return project, _user_named(s, user_name)


def _user_named(s, name: str) -> User:  # type: ignore[no-untyped-def]
    user = s.exec(select(User).where(User.name == name)).first()
    if user is None:
        raise NotFound(f"no user named {name!r}; see `vh-orch user list`")
    return user
