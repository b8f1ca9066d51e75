using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Drydock.Repository;
using Drydock.Repository.Compression;
using Drydock.Repository.Format;
using Drydock.Repository.Maintenance;
using Drydock.Storage;

namespace Drydock.SiloHost.Cli;

/// <summary><c>drydock repo init|info|verify|prune|gc REPO</c>.</summary>
/// <remarks>
/// The passphrase comes from an environment variable (<c>--passphrase-env</c>, default <c>DRYDOCK_PASSPHRASE</c>) or a
/// file (<c>--passphrase-file</c>); never from the command line, and it is never printed or logged.
/// Exit codes: 0 success, 1 verify found damage, 2 error.
/// </remarks>
public static class RepoCommands
{
    /// <summary>The default passphrase variable.</summary>
    public const string DefaultPassphraseVariable = "DRYDOCK_PASSPHRASE";

    private static readonly JsonSerializerOptions Pretty = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Builds the <c>repo</c> command.</summary>
    /// <returns>The command.</returns>
    public static Command Build()
    {
        var repo = new Command("repo", "Create, inspect, verify and maintain a backup repository.");
        repo.Subcommands.Add(Init());
        repo.Subcommands.Add(Info());
        repo.Subcommands.Add(Verify());
        repo.Subcommands.Add(Prune());
        repo.Subcommands.Add(Gc());
        return repo;
    }

    private static Argument<string> RepoArgument() => new("REPO")
    {
        Description = "file:///path, azure://container/prefix (connection string in $DRYDOCK_AZURE_CONNECTION_STRING), or a container SAS URL",
    };

    internal static Option<bool> JsonOption() => new("--json") { Description = "Print JSON." };

    internal static Option<string> PassphraseEnvOption() => new("--passphrase-env")
    {
        Description = "Environment variable holding the passphrase.",
        DefaultValueFactory = _ => DefaultPassphraseVariable,
    };

    internal static Option<FileInfo?> PassphraseFileOption() => new("--passphrase-file") { Description = "File holding the passphrase (first line)." };

    internal static Option<FileInfo?> KeyFileOption() => new("--key-file") { Description = "A key file kept outside the repository." };

    private static Command Init()
    {
        var command = new Command("init", "Create a new repository.");
        var repo = RepoArgument();
        var json = JsonOption();
        var passEnv = PassphraseEnvOption();
        var passFile = PassphraseFileOption();
        var chunkSize = new Option<int>("--chunk-size") { Description = "Chunk size in bytes (power of two, 64 KiB..64 MiB).", DefaultValueFactory = _ => new RepositoryInitOptions().ChunkSize };
        var noEncryption = new Option<bool>("--no-encryption") { Description = "Store chunks unencrypted (manifests stay signed)." };
        var compression = new Option<string>("--compression") { Description = "zstd, brotli or none.", DefaultValueFactory = _ => "zstd" };
        var level = new Option<int>("--level") { Description = "Compression level.", DefaultValueFactory = _ => 1 };
        var iterations = new Option<int>("--kdf-iterations") { Description = "PBKDF2-HMAC-SHA256 iterations.", DefaultValueFactory = _ => Repository.Crypto.KeyFile.DefaultIterations };
        foreach (var option in new Option[] { json, passEnv, passFile, chunkSize, noEncryption, compression, level, iterations })
        {
            command.Options.Add(option);
        }

        command.Arguments.Add(repo);
        command.SetAction((parse, ct) => RunAsync(parse, async output =>
        {
            var store = await RepositoryLocation.OpenAsync(parse.GetValue(repo)!, create: true, ct);
            var init = new RepositoryInitOptions
            {
                ChunkSize = parse.GetValue(chunkSize),
                Encrypt = !parse.GetValue(noEncryption),
                Compression = parse.GetValue(compression) switch
                {
                    "zstd" => CompressionAlgorithm.Zstd,
                    "brotli" => CompressionAlgorithm.Brotli,
                    "none" => CompressionAlgorithm.None,
                    var other => throw new ArgumentException($"--compression '{other}': use zstd, brotli or none"),
                },
                CompressionLevel = parse.GetValue(level),
                KdfIterations = parse.GetValue(iterations),
            };
            using var repository = await BackupRepository.InitAsync(store, ReadPassphrase(parse.GetValue(passEnv)!, parse.GetValue(passFile)), init, cancellationToken: ct);
            var result = ConfigJson(repository);
            result["location"] = store.Location;
            result["zstdAvailable"] = ChunkCompressor.ZstdAvailable;
            Print(output, parse.GetValue(json), result, $"Created repository {repository.RepositoryId} at {store.Location}");
            return 0;
        }));
        return command;
    }

    private static Command Info()
    {
        var command = new Command("info", "Show the configuration, points, storage use and the last verify.");
        var (repo, json, passEnv, passFile, keyFile) = Common(command);
        command.SetAction((parse, ct) => RunAsync(parse, async output =>
        {
            using var repository = await OpenAsync(parse, repo, passEnv, passFile, keyFile, ct);
            var result = ConfigJson(repository);
            result["location"] = repository.Store.Location;
            var domains = new JsonArray();
            foreach (var group in (await repository.ListPointsAsync(cancellationToken: ct)).GroupBy(p => (p.Tenant, p.DomainId)))
            {
                domains.Add(new JsonObject
                {
                    ["tenant"] = group.Key.Tenant,
                    ["domainId"] = group.Key.DomainId.ToString("D"),
                    ["points"] = group.Count(),
                    ["sequences"] = new JsonArray(group.Select(p => (JsonNode)p.Sequence).ToArray()),
                });
            }

            result["domains"] = domains;
            long chunks = 0, chunkBytes = 0, indexes = 0;
            await foreach (var item in repository.Store.ListAsync(ObjectNames.ChunksPrefix, ct))
            {
                chunks++;
                chunkBytes += item.Length;
            }

            await foreach (var _ in repository.Store.ListAsync(ObjectNames.IndexesPrefix, ct))
            {
                indexes++;
            }

            var quarantined = 0;
            await foreach (var _ in repository.Store.ListAsync(ObjectNames.QuarantinePrefix, ct))
            {
                quarantined++;
            }

            result["chunks"] = chunks;
            result["chunkBytes"] = chunkBytes;
            result["indexes"] = indexes;
            result["quarantinedChunks"] = quarantined;
            string? lastVerify = null;
            await foreach (var item in repository.Store.ListAsync(ObjectNames.VerifyPrefix, ct))
            {
                lastVerify = item.Name;
            }

            result["lastVerify"] = lastVerify;
            var text = string.Create(CultureInfo.InvariantCulture, $"""
                Repository {repository.RepositoryId} at {repository.Store.Location}
                  encryption {repository.Config.Encryption}, chunk ids {repository.Config.ChunkIds}, chunk size {repository.Config.ChunkSize}, compression {repository.Config.Compression} level {repository.Config.CompressionLevel}
                  {domains.Count} domain(s), {chunks} chunk(s) ({chunkBytes} bytes stored), {indexes} index(es), {quarantined} quarantined
                  last verify: {lastVerify ?? "never"}
                """);
            Print(output, parse.GetValue(json), result, text);
            return 0;
        }));
        return command;
    }

    private static Command Verify()
    {
        var command = new Command("verify", "Check manifests, lineage, indexes and chunks; record the result. Exit 1 if anything is damaged.");
        var (repo, json, passEnv, passFile, keyFile) = Common(command);
        var sample = new Option<double>("--sample") { Description = "Percentage of chunks to read, more than 0 and at most 100 (100 = full).", DefaultValueFactory = _ => 100 };
        sample.Validators.Add(result =>
        {
            // 0 would check no chunk at all and still report "all intact".
            if (result.GetValueOrDefault<double>() is not (> 0 and <= 100))
            {
                result.AddError("--sample must be more than 0 and at most 100 (the percentage of chunks to read)");
            }
        });
        command.Options.Add(sample);
        command.SetAction((parse, ct) => RunAsync(parse, async output =>
        {
            using var repository = await OpenAsync(parse, repo, passEnv, passFile, keyFile, ct);
            var report = await repository.VerifyAsync(new VerifyOptions { SamplePercent = parse.GetValue(sample) }, ct);
            var result = JsonSerializer.SerializeToNode(report.Record, RepositoryJsonContext.Default.VerifyRecordDocument)!.AsObject();
            result["recordName"] = report.RecordName;
            result["ok"] = report.Ok;
            var lines = new List<string> { string.Create(CultureInfo.InvariantCulture, $"Checked {report.Record.Points.Count} point(s), {report.Record.ChunksChecked} chunk(s) ({report.Record.SamplePercent}%): {(report.Ok ? "all intact" : "DAMAGE FOUND")}") };
            foreach (var point in report.Damaged)
            {
                foreach (var problem in point.Problems)
                {
                    lines.Add(string.Create(CultureInfo.InvariantCulture, $"  {point.Tenant}/{point.DomainId:D}#{point.Sequence} {problem.Disk} {(problem.Offset is { } o ? $"bytes {o}..{o + problem.Length - 1}" : "")}: {problem.Problem}"));
                }
            }

            Print(output, parse.GetValue(json), result, string.Join('\n', lines));
            return report.Ok ? 0 : 1;
        }));
        return command;
    }

    private static Command Prune()
    {
        var command = new Command("prune", "Remove points that no retention rule keeps (their data goes at the next gc).");
        var (repo, json, passEnv, passFile, keyFile) = Common(command);
        var last = new Option<int>("--keep-last") { Description = "Keep the newest N points per domain." };
        var hourly = new Option<int>("--keep-hourly") { Description = "Keep the newest point of each of N hours." };
        var daily = new Option<int>("--keep-daily") { Description = "Keep the newest point of each of N days." };
        var weekly = new Option<int>("--keep-weekly") { Description = "Keep the newest point of each of N weeks." };
        var monthly = new Option<int>("--keep-monthly") { Description = "Keep the newest point of each of N months." };
        var yearly = new Option<int>("--keep-yearly") { Description = "Keep the newest point of each of N years." };
        var protect = new Option<string[]>("--protect") { Description = "A point to keep: tenant/domain-uuid#sequence (repeatable).", AllowMultipleArgumentsPerToken = true };
        var dryRun = new Option<bool>("--dry-run") { Description = "Only report." };
        foreach (var option in new Option[] { last, hourly, daily, weekly, monthly, yearly, protect, dryRun })
        {
            command.Options.Add(option);
        }

        var rules = new[] { last, hourly, daily, weekly, monthly, yearly };
        command.Validators.Add(result =>
        {
            // No rule is not "keep everything": retention always keeps the newest point, so it would remove all others.
            if (rules.FirstOrDefault(r => result.GetValue(r) < 0) is { } negative)
            {
                result.AddError($"{negative.Name} cannot be negative");
            }
            else if (rules.All(r => result.GetValue(r) == 0))
            {
                result.AddError($"prune needs at least one of {string.Join(", ", rules.Select(r => r.Name))} (--keep-last 1 keeps only the newest point of each domain)");
            }
        });

        command.SetAction((parse, ct) => RunAsync(parse, async output =>
        {
            using var repository = await OpenAsync(parse, repo, passEnv, passFile, keyFile, ct);
            var policy = new RetentionPolicy
            {
                KeepLast = parse.GetValue(last),
                KeepHourly = parse.GetValue(hourly),
                KeepDaily = parse.GetValue(daily),
                KeepWeekly = parse.GetValue(weekly),
                KeepMonthly = parse.GetValue(monthly),
                KeepYearly = parse.GetValue(yearly),
            };
            var protectedPoints = (parse.GetValue(protect) ?? []).Select(ParsePoint).ToHashSet();
            var report = await repository.PruneAsync(policy, new PruneOptions { DryRun = parse.GetValue(dryRun), Protected = protectedPoints, Holder = "drydock repo prune" }, ct);
            var kept = new JsonObject();
            foreach (var (point, reasons) in report.Kept)
            {
                kept[point.ToString()] = new JsonArray(reasons.Select(r => (JsonNode)r).ToArray());
            }

            var result = new JsonObject
            {
                ["dryRun"] = report.DryRun,
                ["kept"] = kept,
                ["removed"] = new JsonArray(report.Removed.Select(p => (JsonNode)p.ToString()).ToArray()),
                ["unreadable"] = new JsonObject(report.Unreadable.Select(u => KeyValuePair.Create(u.Key.ToString(), (JsonNode?)u.Value))),
            };
            var verb = report.DryRun ? "Would remove" : "Removed";
            Print(output, parse.GetValue(json), result, string.Create(CultureInfo.InvariantCulture, $"{verb} {report.Removed.Count} point(s), kept {report.Kept.Count}, {report.Unreadable.Count} unreadable left alone"));
            return 0;
        }));
        return command;
    }

    private static Command Gc()
    {
        var command = new Command("gc", "Delete chunks and indexes no point references, older than the grace window.");
        var (repo, json, passEnv, passFile, keyFile) = Common(command);
        var grace = new Option<TimeSpan>("--grace") { Description = "Grace window (d.hh:mm:ss); must exceed the longest backup.", DefaultValueFactory = _ => new GcOptions().Grace };
        var dryRun = new Option<bool>("--dry-run") { Description = "Only report." };
        command.Options.Add(grace);
        command.Options.Add(dryRun);
        command.SetAction((parse, ct) => RunAsync(parse, async output =>
        {
            using var repository = await OpenAsync(parse, repo, passEnv, passFile, keyFile, ct);
            var report = await repository.CollectGarbageAsync(new GcOptions { Grace = parse.GetValue(grace), DryRun = parse.GetValue(dryRun), Holder = "drydock repo gc" }, ct);
            var result = new JsonObject
            {
                ["dryRun"] = report.DryRun,
                ["referencedChunks"] = report.ReferencedChunks,
                ["deletedChunks"] = report.DeletedChunks,
                ["deletedIndexes"] = report.DeletedIndexes,
                ["youngUnreferenced"] = report.YoungUnreferenced,
                ["bytesFreed"] = report.BytesFreed,
                ["marker"] = report.MarkerName,
            };
            var verb = report.DryRun ? "Would delete" : "Deleted";
            Print(output, parse.GetValue(json), result, string.Create(CultureInfo.InvariantCulture, $"{verb} {report.DeletedChunks} chunk(s) and {report.DeletedIndexes} index(es), {report.BytesFreed} bytes; {report.ReferencedChunks} referenced, {report.YoungUnreferenced} too young to collect"));
            return 0;
        }));
        return command;
    }

    private static (Argument<string> Repo, Option<bool> Json, Option<string> PassEnv, Option<FileInfo?> PassFile, Option<FileInfo?> KeyFile) Common(Command command)
    {
        var repo = RepoArgument();
        var json = JsonOption();
        var passEnv = PassphraseEnvOption();
        var passFile = PassphraseFileOption();
        var keyFile = KeyFileOption();
        command.Arguments.Add(repo);
        command.Options.Add(json);
        command.Options.Add(passEnv);
        command.Options.Add(passFile);
        command.Options.Add(keyFile);
        return (repo, json, passEnv, passFile, keyFile);
    }

    private static Task<BackupRepository> OpenAsync(ParseResult parse, Argument<string> repo, Option<string> passEnv, Option<FileInfo?> passFile, Option<FileInfo?> keyFile, CancellationToken cancellationToken) =>
        OpenRepositoryAsync(parse.GetValue(repo)!, parse.GetValue(passEnv)!, parse.GetValue(passFile), parse.GetValue(keyFile), cancellationToken);

    /// <summary>Opens an existing repository from its URL and the passphrase options.</summary>
    internal static async Task<BackupRepository> OpenRepositoryAsync(string repo, string passphraseVariable, FileInfo? passphraseFile, FileInfo? keyFile, CancellationToken cancellationToken)
    {
        var store = await RepositoryLocation.OpenAsync(repo, create: false, cancellationToken);
        var key = keyFile is { } file ? await File.ReadAllBytesAsync(ExistingFile(file, "key file"), cancellationToken) : null;
        return await BackupRepository.OpenAsync(store, ReadPassphrase(passphraseVariable, passphraseFile), keyFile: key, cancellationToken: cancellationToken);
    }

    internal static string ReadPassphrase(string variable, FileInfo? file)
    {
        if (file is not null)
        {
            var text = File.ReadAllText(ExistingFile(file, "passphrase file")).Split('\n')[0].TrimEnd('\r');
            return text.Length > 0 ? text : throw new ArgumentException($"passphrase file {file.FullName} is empty");
        }

        var value = Environment.GetEnvironmentVariable(variable);
        return string.IsNullOrEmpty(value)
            ? throw new ArgumentException($"no passphrase: set ${variable} or pass --passphrase-file (never on the command line)")
            : value;
    }

    /// <summary>The path of a file named on the command line, or a usage error saying it is missing or a directory.</summary>
    private static string ExistingFile(FileInfo file, string what) =>
        File.Exists(file.FullName) ? file.FullName
        : Directory.Exists(file.FullName) ? throw new ArgumentException($"{what} {file.FullName} is a directory")
        : throw new ArgumentException($"{what} {file.FullName} does not exist");

    private static PointRef ParsePoint(string text)
    {
        var hash = text.LastIndexOf('#');
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        if (hash < 0 || slash < 0 || !Guid.TryParse(text[(slash + 1)..hash], out var domain)
            || !long.TryParse(text[(hash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var sequence))
        {
            throw new ArgumentException($"--protect '{text}': expected tenant/domain-uuid#sequence");
        }

        return new PointRef(text[..slash], domain, sequence);
    }

    private static JsonObject ConfigJson(BackupRepository repository)
        => JsonSerializer.SerializeToNode(repository.Config, RepositoryJsonContext.Default.RepositoryConfigDocument)!.AsObject();

    private static void Print(TextWriter output, bool json, JsonNode result, string text)
        => output.WriteLine(json ? result.ToJsonString(Pretty) : text);

    private static async Task<int> RunAsync(ParseResult parse, Func<TextWriter, Task<int>> body)
    {
        var output = parse.InvocationConfiguration.Output;
        try
        {
            return await body(output);
        }
        catch (Exception e) when (e is RepositoryException or BlobStoreException or ArgumentException or IOException or FormatException or UnauthorizedAccessException)
        {
            // As every other command: a bad request (option value, repository URL) is a usage error, anything the
            // repository or the storage refuses is a failure.
            await parse.InvocationConfiguration.Error.WriteLineAsync("drydock: error: " + ErrorText.Of(e));
            return e is ArgumentException or FormatException ? ExitCodes.Usage : ExitCodes.Failure;
        }
    }
}
