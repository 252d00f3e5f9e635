//! Changing a password (a first-use change needs no session).

use keyhold_api as api;
use secrecy::SecretString;

use crate::ApiResult;
use crate::app::AppState;

pub async fn change_password(app: &AppState, req: api::PasswordChangeRequest) -> ApiResult<()> {
    let current = SecretString::from(req.current_password);
    let new = SecretString::from(req.new_password);
    app.keyhold
        .change_password(&req.user, &current, &new)
        .await?;
    Ok(())
}
