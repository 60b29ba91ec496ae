//! `fledge-manager profile ...`: cluster profiles from the command line.

use std::path::Path;

use fledge_core::proto::v1;
use fledge_core::spec::{ClusterProfile, ClusterProfileSpec};
use fledge_core::validate::{Document, load_and_validate};

use super::client::{CliError, Client};
use super::output::{self, Format};
use super::{Exit, read_input};

/// Reads one profile; `None` when it does not exist.
async fn get_opt(client: &Client, name: &str) -> Result<Option<v1::Profile>, CliError> {
    let mut api = client.api.clone();
    match client
        .call(
            &format!("getting profile {name:?}"),
            api.get_profile(v1::GetProfileRequest {
                name: name.to_owned(),
            }),
        )
        .await
    {
        Ok(profile) => Ok(Some(profile)),
        Err(err) if err.exit == Exit::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Creates or updates one profile like `kubectl apply`: prints `created`, `configured` or
/// `unchanged`. A concurrent update (stale generation) gets one retry on a fresh read.
pub async fn apply_one(client: &Client, profile: &ClusterProfile) -> Result<(), CliError> {
    let name = profile.metadata.name.clone().unwrap_or_default();
    let what = format!("applying profile {name:?}");
    let wanted = v1::ProfileSpec::from(&profile.spec);
    let mut retried = false;
    loop {
        let mut api = client.api.clone();
        let Some(existing) = get_opt(client, &name).await? else {
            client
                .call(
                    &what,
                    api.create_profile(v1::CreateProfileRequest {
                        name: name.clone(),
                        spec: Some(wanted.clone()),
                    }),
                )
                .await?;
            println!("clusterprofile/{name} created");
            return Ok(());
        };
        let stored = ClusterProfileSpec::from(existing.spec.clone().unwrap_or_default());
        if stored == profile.spec {
            println!("clusterprofile/{name} unchanged");
            return Ok(());
        }
        let request = v1::UpdateProfileRequest {
            name: name.clone(),
            spec: Some(wanted.clone()),
            expected_generation: existing.generation,
        };
        match client.call(&what, api.update_profile(request)).await {
            Ok(_) => {
                println!("clusterprofile/{name} configured");
                return Ok(());
            }
            Err(err) if !retried && err.message.contains("changed concurrently") => {
                retried = true;
            }
            Err(err) => return Err(err),
        }
    }
}

/// `profile apply -f FILE`.
pub async fn apply(client: &Client, file: &Path) -> Result<Exit, CliError> {
    let text = read_input(file).map_err(|e| CliError::bad_input(format!("{e:#}")))?;
    let docs = load_and_validate(&text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        CliError::bad_input(format!("{}: invalid\n{}", file.display(), lines.join("\n")))
    })?;
    let mut applied = 0;
    for doc in &docs {
        match doc {
            Document::ClusterProfile(p) => {
                apply_one(client, p).await?;
                applied += 1;
            }
            Document::WorkloadCluster(c) => eprintln!(
                "skipping WorkloadCluster/{} (use `cluster create -f`)",
                c.metadata.name.as_deref().unwrap_or_default()
            ),
        }
    }
    if applied == 0 {
        return Err(CliError::bad_input(format!(
            "{}: no ClusterProfile in the file",
            file.display()
        )));
    }
    Ok(Exit::Success)
}

/// `profile get NAME`.
pub async fn get(client: &Client, name: &str, format: Format) -> Result<Exit, CliError> {
    let mut api = client.api.clone();
    let profile = client
        .call(
            &format!("getting profile {name:?}"),
            api.get_profile(v1::GetProfileRequest {
                name: name.to_owned(),
            }),
        )
        .await?;
    print_profiles(&[profile], format, false);
    Ok(Exit::Success)
}

/// `profile list`.
pub async fn list(client: &Client, format: Format) -> Result<Exit, CliError> {
    let mut profiles = Vec::new();
    let mut page_token = String::new();
    loop {
        let mut api = client.api.clone();
        let page = client
            .call(
                "listing profiles",
                api.list_profiles(v1::ListProfilesRequest {
                    page_size: 0,
                    page_token: page_token.clone(),
                }),
            )
            .await?;
        profiles.extend(page.profiles);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if profiles.is_empty() && matches!(format, Format::Table | Format::Wide) {
        eprintln!("No profiles found.");
        return Ok(Exit::Success);
    }
    print_profiles(&profiles, format, true);
    Ok(Exit::Success)
}

fn print_profiles(profiles: &[v1::Profile], format: Format, as_list: bool) {
    match format {
        Format::Json | Format::Yaml => {
            let objects: Vec<_> = profiles.iter().map(output::profile_object).collect();
            let value = match (as_list, objects.as_slice()) {
                (false, [one]) => one.clone(),
                _ => output::list_object(objects),
            };
            output::print_object(&value, format);
        }
        Format::Table | Format::Wide => {
            let now = chrono::Utc::now();
            let mut rows = vec![output::profile_header()];
            rows.extend(profiles.iter().map(|p| output::profile_row(p, now)));
            print!("{}", output::table(&rows));
        }
    }
}

/// `profile delete NAME`: FAILED_PRECONDITION (exit 1) while a cluster uses it.
pub async fn delete(client: &Client, name: &str) -> Result<Exit, CliError> {
    let mut api = client.api.clone();
    client
        .call(
            &format!("deleting profile {name:?}"),
            api.delete_profile(v1::DeleteProfileRequest {
                name: name.to_owned(),
            }),
        )
        .await?;
    println!("clusterprofile/{name} deleted");
    Ok(Exit::Success)
}
