using System.Collections.Concurrent;
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Drydock.Hypervisor;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Storage;
using Drydock.Transfer;
using Drydock.Transfer.Backup;
using Drydock.Transfer.Chain;
using Drydock.Transfer.Jobs;
using Drydock.Transfer.Restore;

namespace Drydock.SiloHost.Cli;

/// <summary>
/// The standalone job on one hypervisor host, no cluster: <c>drydock backup</c>, <c>drydock restore</c>,
/// <c>drydock points</c>. Progress goes to standard error on a terminal; <c>--json</c> prints one JSON document on
/// standard output. Exit codes: <see cref="ExitCodes"/>.
/// </summary>
internal static class BackupCommands
{
    // Output for people and scripts, not HTML: '+' in a time zone offset stays '+', not \u002B.
    private static readonly JsonSerializerOptions Pretty = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static IEnumerable<Command> Build(Func<HypervisorConnectors> connectors)
    {
        yield return Backup(connectors);
        yield return Restore(connectors);
        yield return Points();
    }

    private static Command Backup(Func<HypervisorConnectors> connectors)
    {
        var domain = new Argument<string>("DOMAIN") { Description = "The domain's name or UUID." };
        var hypervisor = HypervisorOption(required: true);
        var level = new Option<string>("--level") { Description = "auto (incremental where possible), full, inc or diff.", DefaultValueFactory = _ => "auto" };
        level.AcceptOnlyFromAmong("auto", "full", "inc", "incremental", "diff", "differential");
        var disks = DiskOption("A disk (target name) to back up; repeatable. Default: every disk.");
        var noFallback = new Option<bool>("--no-fallback") { Description = "Fail instead of taking a full when a disk cannot do the requested level." };
        var label = new Option<string[]>("--label") { Description = "KEY=VALUE stored in the point's manifest; repeatable.", AllowMultipleArgumentsPerToken = true };
        var patchBelow = new Option<double>("--patch-below")
        {
            Description = "Incremental/differential: rebuild a chunk changed in at most this fraction of it from the parent's copy in the "
                + "repository, reading only its changed ranges from the source (less load on the source, more on the repository); 0 re-reads whole chunks.",
            DefaultValueFactory = _ => new BackupPipelineOptions().PatchChangedBelow,
        };
        patchBelow.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<double>() is < 0 or > 1)
            {
                result.AddError("--patch-below must be between 0 and 1");
            }
        });
        var command = new Command("backup", "Back up a domain's disks into a repository (full, incremental or differential).") { domain, hypervisor, level, disks, noFallback, label, patchBelow };
        var common = Common(command);
        command.SetGuardedAction(async (parse, cancellationToken) =>
        {
            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var pair in parse.GetValue(label) ?? [])
            {
                var equals = pair.IndexOf('=', StringComparison.Ordinal);
                if (equals <= 0)
                {
                    throw new ArgumentException($"--label '{pair}': expected KEY=VALUE");
                }

                labels[pair[..equals]] = pair[(equals + 1)..];
            }

            var request = new BackupJobRequest
            {
                Domain = parse.GetValue(domain)!,
                Level = ParseLevel(parse.GetValue(level)!),
                Disks = parse.GetValue(disks) is { Length: > 0 } chosen ? chosen : null,
                AllowFallback = !parse.GetValue(noFallback),
                Tenant = parse.GetValue(common.Tenant)!,
                Labels = labels,
            };
            using var repository = await common.OpenAsync(parse, cancellationToken);
            await using var driver = await connectors().ConnectAsync(parse.GetValue(hypervisor)!, cancellationToken);
            var job = new BackupJob(driver, repository, new BackupJobOptions { Pipeline = new BackupPipelineOptions { PatchChangedBelow = parse.GetValue(patchBelow) } });
            var error = parse.InvocationConfiguration.Error;
            var view = new ProgressView();
            BackupJobResult result;
            await using (new TerminalProgress(error, "backup", view.Total, view.Done, TerminalProgress.IsTerminal(error)))
            {
                result = await job.RunAsync(request, view, cancellationToken);
            }

            var output = parse.InvocationConfiguration.Output;
            if (parse.GetValue(common.Json))
            {
                await output.WriteLineAsync(BackupJson(result).ToJsonString(Pretty));
            }
            else
            {
                await output.WriteLineAsync(BackupText(result));
            }

            if (cancellationToken.IsCancellationRequested)
            {
                // Too late to stop: the point is committed and complete, so the command succeeded.
                await error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"drydock: interrupted after point {result.Point.Sequence} was committed; the backup is complete"));
            }

            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Restore(Func<HypervisorConnectors> connectors)
    {
        var domain = new Argument<string>("DOMAIN") { Description = "The domain's name or UUID as stored in the repository." };
        var point = new Option<long?>("--point") { Description = "The point's sequence (see 'drydock points'). Default: the newest." };
        var to = new Option<DirectoryInfo?>("--to") { Description = "Restore to new images DIR/<disk>.raw or .qcow2." };
        var format = new Option<string>("--format") { Description = "raw or qcow2 (with --to).", DefaultValueFactory = _ => "raw" };
        format.AcceptOnlyFromAmong("raw", "qcow2");
        var into = new Option<bool>("--into-domain") { Description = "Restore into the domain's own disks (it must be paused or shut off)." };
        var changedOnly = new Option<bool>("--changed-only") { Description = "With --into-domain: write only the chunks that differ from the point." };
        var hypervisor = HypervisorOption(required: false);
        var disks = DiskOption("A disk to restore; repeatable. Default: every disk of the point.");
        var command = new Command("restore", "Restore a point to new images or into the domain's disks.") { domain, point, to, format, into, changedOnly, hypervisor, disks };
        var common = Common(command);
        command.Validators.Add(result =>
        {
            var hasTo = result.GetValue(to) is not null;
            var hasInto = result.GetValue(into);
            if (hasTo == hasInto)
            {
                result.AddError("give exactly one of --to DIR or --into-domain");
            }
            else if (hasInto && string.IsNullOrEmpty(result.GetValue(hypervisor)))
            {
                result.AddError("--into-domain needs --hypervisor URI");
            }
            else if (result.GetValue(changedOnly) && !hasInto)
            {
                result.AddError("--changed-only applies to --into-domain only");
            }
        });
        command.SetGuardedAction(async (parse, cancellationToken) =>
        {
            var request = new RestoreJobRequest
            {
                Domain = parse.GetValue(domain)!,
                Tenant = parse.GetValue(common.Tenant)!,
                Sequence = parse.GetValue(point),
                Disks = parse.GetValue(disks) is { Length: > 0 } chosen ? chosen : null,
            };
            using var repository = await common.OpenAsync(parse, cancellationToken);
            var job = new RestoreJob(repository);
            var error = parse.InvocationConfiguration.Error;
            var view = new ProgressView();
            RestoreJobResult result;
            await using (new TerminalProgress(error, "restore", view.Total, view.Done, TerminalProgress.IsTerminal(error)))
            {
                if (parse.GetValue(to) is { } directory)
                {
                    var imageFormat = parse.GetValue(format) == "qcow2" ? DiskImageFormat.Qcow2 : DiskImageFormat.Raw;
                    result = await job.ToDirectoryAsync(request, directory.FullName, imageFormat, view, cancellationToken);
                }
                else
                {
                    await using var driver = await connectors().ConnectAsync(parse.GetValue(hypervisor)!, cancellationToken);
                    var target = await ResolveDomainAsync(driver, request.Domain, cancellationToken);
                    result = await job.IntoDomainAsync(request, driver, target.Id, parse.GetValue(changedOnly), view, cancellationToken);
                }
            }

            var output = parse.InvocationConfiguration.Output;
            await output.WriteLineAsync(parse.GetValue(common.Json) ? RestoreJson(result).ToJsonString(Pretty) : RestoreText(result));
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command Points()
    {
        var domain = new Argument<string>("DOMAIN") { Description = "The domain's name or UUID as stored in the repository." };
        var command = new Command("points", "List a domain's restore points, oldest first.") { domain };
        var common = Common(command);
        command.SetGuardedAction(async (parse, cancellationToken) =>
        {
            using var repository = await common.OpenAsync(parse, cancellationToken);
            var job = new RestoreJob(repository);
            var name = parse.GetValue(domain)!;
            var tenant = parse.GetValue(common.Tenant)!;
            var points = await job.FindPointsAsync(name, tenant, cancellationToken);
            if (points.Count == 0 && !await HadPointsAsync(repository, tenant, name, cancellationToken))
            {
                throw new ArgumentException(await UnknownDomainMessageAsync(repository, tenant, name, cancellationToken));
            }

            var manifests = new List<PointManifest>();
            foreach (var point in points)
            {
                manifests.Add(await repository.ReadManifestAsync(point, cancellationToken));
            }

            var output = parse.InvocationConfiguration.Output;
            if (parse.GetValue(common.Json))
            {
                var array = new JsonArray();
                foreach (var manifest in manifests)
                {
                    array.Add(PointJson(manifest));
                }

                await output.WriteLineAsync(array.ToJsonString(Pretty));
                return ExitCodes.Success;
            }

            if (manifests.Count == 0)
            {
                await output.WriteLineAsync("no points");
                return ExitCodes.Success;
            }

            await output.WriteLineAsync($"{"POINT",6}  {"CREATED (UTC)",-20}  {"DISKS",-40}  STORED");
            foreach (var manifest in manifests)
            {
                var disks = string.Join(", ", manifest.Disks.Select(d => $"{d.Name}:{LevelName(d.Level)}"));
                var stored = (ulong)manifest.Disks.Sum(d => d.Stats.BytesUploaded);
                await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"{manifest.Sequence,6}  {manifest.CreatedAt.UtcDateTime,-20:yyyy-MM-dd HH:mm:ss}  {disks,-40}  {Sizes.Human(stored)}"));
            }

            return ExitCodes.Success;
        });
        return command;
    }

    private sealed record CommonOptions(Option<string> RepoUrl, Option<string> Tenant, Option<bool> Json, Option<string> PassEnv, Option<FileInfo?> PassFile, Option<FileInfo?> KeyFile)
    {
        public Task<BackupRepository> OpenAsync(ParseResult parse, CancellationToken cancellationToken) =>
            RepoCommands.OpenRepositoryAsync(parse.GetValue(RepoUrl)!, parse.GetValue(PassEnv)!, parse.GetValue(PassFile), parse.GetValue(KeyFile), cancellationToken);
    }

    private static CommonOptions Common(Command command)
    {
        var repo = new Option<string>("--repo")
        {
            Description = "The repository: file:///path, azure://container/prefix or a container SAS URL.",
            Required = true,
        };
        var tenant = new Option<string>("--tenant") { Description = "The tenant.", DefaultValueFactory = _ => "default" };
        var common = new CommonOptions(repo, tenant, RepoCommands.JsonOption(), RepoCommands.PassphraseEnvOption(), RepoCommands.PassphraseFileOption(), RepoCommands.KeyFileOption());
        command.Options.Add(common.RepoUrl);
        command.Options.Add(common.Tenant);
        command.Options.Add(common.Json);
        command.Options.Add(common.PassEnv);
        command.Options.Add(common.PassFile);
        command.Options.Add(common.KeyFile);
        return common;
    }

    private static Option<string> HypervisorOption(bool required) => new("--hypervisor")
    {
        Description = "The hypervisor: libvirt:qemu:///system, qemu:unix:/path/qmp.sock or virtuozzo:qemu:///system.",
        Required = required,
    };

    private static Option<string[]> DiskOption(string description) => new("--disk") { Description = description, AllowMultipleArgumentsPerToken = true };

    private static RequestedLevel ParseLevel(string text) => text switch
    {
        "full" => RequestedLevel.Full,
        "inc" or "incremental" => RequestedLevel.Incremental,
        "diff" or "differential" => RequestedLevel.Differential,
        _ => RequestedLevel.Auto,
    };

    private static string LevelName(DiskBackupLevel level) => level switch
    {
        DiskBackupLevel.Full => "full",
        DiskBackupLevel.Incremental => "inc",
        DiskBackupLevel.Differential => "diff",
        _ => level.ToString(),
    };

    private static async Task<DomainInfo> ResolveDomainAsync(IHypervisorDriver driver, string domain, CancellationToken cancellationToken)
    {
        var domains = await driver.ListDomainsAsync(cancellationToken);
        return domains.FirstOrDefault(d => string.Equals(d.Id, domain, StringComparison.OrdinalIgnoreCase))
            ?? domains.FirstOrDefault(d => string.Equals(d.Name, domain, StringComparison.Ordinal))
            ?? throw new ArgumentException($"no domain '{domain}' on {driver.HostName}");
    }

    /// <summary>Whether a domain whose every point is gone had points once (its tombstones remain after a prune).</summary>
    private static async Task<bool> HadPointsAsync(BackupRepository repository, string tenant, string domain, CancellationToken cancellationToken)
    {
        await foreach (var _ in repository.Store.ListAsync(ObjectNames.DomainTombstones(tenant, DomainKeys.ToRepositoryId(domain)), cancellationToken))
        {
            return true;
        }

        return false;
    }

    /// <summary>"no domain 'X' in repository R", with the names of the tenant's domains when there are few.</summary>
    private static async Task<string> UnknownDomainMessageAsync(BackupRepository repository, string tenant, string domain, CancellationToken cancellationToken)
    {
        const int MaxNamed = 10;
        var message = $"no domain '{domain}' in repository {repository.Store.Location}" + (tenant == "default" ? "" : $" for tenant '{tenant}'");
        var domains = (await repository.ListPointsAsync(tenant, null, cancellationToken)).GroupBy(p => p.DomainId).ToList();
        if (domains.Count == 0)
        {
            return message + " (it holds no points)";
        }

        if (domains.Count > MaxNamed)
        {
            return string.Create(CultureInfo.InvariantCulture, $"{message} ({domains.Count} domains there; see 'drydock repo info')");
        }

        var names = new List<string>();
        foreach (var group in domains)
        {
            var newest = await repository.ReadManifestAsync(group.MaxBy(p => p.Sequence)!, cancellationToken);
            names.Add($"{newest.DomainName} ({group.Key:D})");
        }

        return $"{message}; known domains: {string.Join(", ", names.Order(StringComparer.Ordinal))}";
    }

    private static JsonObject BackupJson(BackupJobResult result)
    {
        var disks = new JsonArray();
        foreach (var disk in result.Disks)
        {
            disks.Add(new JsonObject
            {
                ["disk"] = disk.Target,
                ["level"] = LevelName(disk.Level),
                ["fullReason"] = disk.FullReason is { } reason ? new JsonObject { ["code"] = reason.Code.ToString(), ["message"] = reason.Message } : null,
                ["bytesRead"] = disk.Transfer.BytesRead,
                ["chunksRead"] = disk.Transfer.ChunksRead,
                ["chunksZero"] = disk.Transfer.ChunksZero,
                ["chunksInherited"] = disk.Transfer.ChunksInherited,
                ["chunksPatched"] = disk.Transfer.ChunksPatched,
                ["bytesUploaded"] = disk.Stored.BytesUploaded,
                ["chunksUploaded"] = disk.Stored.UploadedChunks,
                ["chunksDeduplicated"] = disk.Stored.DedupChunks,
                ["reconnects"] = disk.Transfer.Reconnects,
                ["seconds"] = Math.Round(disk.Transfer.Elapsed.TotalSeconds, 3),
            });
        }

        var repairs = new JsonArray();
        foreach (var repair in result.Repairs)
        {
            repairs.Add(new JsonObject { ["kind"] = repair.Kind.ToString(), ["checkpoint"] = repair.Checkpoint, ["reason"] = repair.Reason });
        }

        return new JsonObject
        {
            ["domain"] = result.Domain.Name,
            ["domainId"] = result.Manifest.DomainId.ToString(),
            ["tenant"] = result.Point.Tenant,
            ["point"] = result.Point.Sequence,
            ["checkpoint"] = result.Manifest.Disks.Select(d => d.CheckpointName).FirstOrDefault(c => c is not null),
            ["disks"] = disks,
            ["repairs"] = repairs,
            ["deletedCheckpoints"] = new JsonArray([.. result.DeletedCheckpoints.Select(c => (JsonNode?)JsonValue.Create(c))]),
            ["seconds"] = Math.Round(result.Elapsed.TotalSeconds, 3),
        };
    }

    private static string BackupText(BackupJobResult result)
    {
        var lines = new List<string>
        {
            string.Create(CultureInfo.InvariantCulture, $"point {result.Point.Sequence} of {result.Domain.Name} ({result.Manifest.DomainId}) committed in {result.Elapsed.TotalSeconds:0.0} s"),
        };
        foreach (var repair in result.Repairs)
        {
            lines.Add($"  repaired checkpoint {repair.Checkpoint}: {repair.Kind} ({repair.Reason})");
        }

        foreach (var disk in result.Disks)
        {
            var why = disk.FullReason is { } reason && reason.Code != FullReasonCode.Requested ? $" — full because {reason.Message}" : "";
            lines.Add(string.Create(
                CultureInfo.InvariantCulture,
                $"  {disk.Target}: {LevelName(disk.Level)}, read {Sizes.Human((ulong)disk.Transfer.BytesRead)} ({Plural(disk.Transfer.ChunksRead, "chunk")}, {disk.Transfer.ChunksZero} zero, {disk.Transfer.ChunksInherited} unchanged{(disk.Transfer.ChunksPatched > 0 ? $", {disk.Transfer.ChunksPatched} patched from the parent" : "")}), stored {Sizes.Human((ulong)disk.Stored.BytesUploaded)} new{why}"));
        }

        return string.Join(Environment.NewLine, lines);
    }

    /// <summary>"1 chunk", "2 chunks".</summary>
    internal static string Plural(long count, string noun) =>
        string.Create(CultureInfo.InvariantCulture, $"{count} {noun}{(count == 1 ? "" : "s")}");

    private static JsonObject RestoreJson(RestoreJobResult result)
    {
        var disks = new JsonArray();
        foreach (var (disk, destination) in result.Disks)
        {
            disks.Add(new JsonObject
            {
                ["disk"] = disk.Disk,
                ["destination"] = destination,
                ["chunksWritten"] = disk.ChunksWritten,
                ["chunksZeroed"] = disk.ChunksZeroed,
                ["chunksSkipped"] = disk.ChunksSkipped,
                ["bytesWritten"] = disk.BytesWritten,
                ["bytesCompared"] = disk.BytesCompared,
                ["seconds"] = Math.Round(disk.Elapsed.TotalSeconds, 3),
            });
        }

        return new JsonObject
        {
            ["tenant"] = result.Point.Tenant,
            ["domainId"] = result.Point.DomainId.ToString(),
            ["domain"] = result.DomainName,
            ["point"] = result.Point.Sequence,
            ["disks"] = disks,
            ["seconds"] = Math.Round(result.Elapsed.TotalSeconds, 3),
        };
    }

    private static string RestoreText(RestoreJobResult result)
    {
        var lines = new List<string> { string.Create(CultureInfo.InvariantCulture, $"point {result.Point.Sequence} of {(result.DomainName is { } name ? $"{name} ({result.Point.DomainId})" : result.Point.DomainId.ToString())} restored in {result.Elapsed.TotalSeconds:0.0} s") };
        foreach (var (disk, destination) in result.Disks)
        {
            lines.Add(string.Create(
                CultureInfo.InvariantCulture,
                $"  {disk.Disk} → {destination}: wrote {Sizes.Human((ulong)disk.BytesWritten)} ({Plural(disk.ChunksWritten, "chunk")}, {disk.ChunksZeroed} zeroed, {disk.ChunksSkipped} unchanged or zero)"));
        }

        return string.Join(Environment.NewLine, lines);
    }

    private static JsonObject PointJson(PointManifest manifest)
    {
        var disks = new JsonArray();
        foreach (var disk in manifest.Disks)
        {
            disks.Add(new JsonObject
            {
                ["disk"] = disk.Name,
                ["level"] = LevelName(disk.Level),
                ["parent"] = disk.ParentSequence,
                ["checkpoint"] = disk.CheckpointName,
                ["virtualSize"] = disk.VirtualSize,
                ["bytesUploaded"] = disk.Stats.BytesUploaded,
            });
        }

        return new JsonObject
        {
            ["point"] = manifest.Sequence,
            ["domain"] = manifest.DomainName,
            ["domainId"] = manifest.DomainId.ToString(),
            ["createdAt"] = manifest.CreatedAt.ToString("O", CultureInfo.InvariantCulture),
            ["finishedAt"] = manifest.FinishedAt.ToString("O", CultureInfo.InvariantCulture),
            ["disks"] = disks,
        };
    }

    /// <summary>The newest progress of every disk, summed for one progress line.</summary>
    private sealed class ProgressView : IProgress<TransferProgress>
    {
        private readonly ConcurrentDictionary<string, TransferProgress> _disks = new(StringComparer.Ordinal);

        public void Report(TransferProgress value) => _disks[value.Disk] = value;

        public ulong Total() => (ulong)_disks.Values.Sum(d => d.TotalBytes);

        public ulong Done() => (ulong)_disks.Values.Sum(d => d.DoneBytes);
    }
}
