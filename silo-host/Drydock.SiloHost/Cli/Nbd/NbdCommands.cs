using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Nbd.Copy;
using Drydock.Nbd.Protocol;

namespace Drydock.SiloHost.Cli.Nbd;

/// <summary>
/// <c>drydock nbd info|map|copy</c>: check an NBD export with Drydock's own client, the way ops use
/// nbdinfo and nbdcopy.
/// </summary>
internal static class NbdCommands
{
    public static Command Build()
    {
        var nbd = new Command("nbd", "Inspect and copy NBD exports (like nbdinfo and nbdcopy).");
        nbd.Subcommands.Add(BuildInfo());
        nbd.Subcommands.Add(BuildMap());
        nbd.Subcommands.Add(BuildCopy());
        nbd.Subcommands.Add(NbdDemoCommand.Build());
        return nbd;
    }

    private static Argument<string> UriArgument() => new("URI")
    {
        Description = "NBD URI: nbd://HOST[:PORT]/EXPORT, nbds://…, nbd+unix:///EXPORT?socket=PATH, nbds+unix://…",
    };

    private static Option<bool> JsonOption() => new("--json") { Description = "Write JSON for scripts instead of text." };

    private static Option<double> TimeoutOption() => new("--timeout")
    {
        Description = "Seconds to wait for a connection or a reply before giving up.",
        DefaultValueFactory = _ => 60,
    };

    private static NbdClientOptions ClientOptions(ParseResult parse, Option<double> timeout)
    {
        var seconds = parse.GetValue(timeout);
        if (seconds <= 0)
        {
            throw new ArgumentException($"--timeout must be positive, not {seconds.ToString(CultureInfo.InvariantCulture)}");
        }

        return new NbdClientOptions
        {
            ConnectTimeout = TimeSpan.FromSeconds(seconds),
            RequestTimeout = TimeSpan.FromSeconds(seconds),
        };
    }

    // ------------------------------------------------------------------------------------ info

    private static Command BuildInfo()
    {
        var uri = UriArgument();
        var json = JsonOption();
        var timeout = TimeoutOption();
        var command = new Command("info", "Show an export: size, flags, block sizes, metadata contexts.") { uri, json, timeout };
        command.SetGuardedAction(async (parse, cancellationToken) =>
        {
            var target = NbdUri.Parse(parse.GetValue(uri)!);
            var description = await NbdClient.DescribeAsync(target, ClientOptions(parse, timeout), cancellationToken);
            var output = parse.InvocationConfiguration.Output;
            await output.WriteAsync(parse.GetValue(json) ? InfoJson(target, description) : InfoText(target, description));
            return ExitCodes.Success;
        });
        return command;
    }

    private static string InfoText(NbdUri uri, NbdExportDescription description)
    {
        var export = description.Export;
        var text = new StringBuilder();
        var invariant = CultureInfo.InvariantCulture;
        text.Append(invariant, $"protocol: newstyle-fixed {(export.Tls ? "with" : "without")} TLS{(export.StructuredReplies ? ", using structured packets" : string.Empty)}\n");
        text.Append(invariant, $"export=\"{export.Name}\":\n");
        text.Append(invariant, $"\texport-size: {export.Size} ({Sizes.Human(export.Size)})\n");
        if (export.Description is { Length: > 0 } about)
        {
            text.Append(invariant, $"\tdescription: {about}\n");
        }

        text.Append(invariant, $"\turi: {uri}\n");
        text.Append("\tcontexts:\n");
        foreach (var context in description.AvailableContexts)
        {
            text.Append(invariant, $"\t\t{context}\n");
        }

        foreach (var (name, value) in Flags(export))
        {
            text.Append(invariant, $"\t{name}: {(value ? "true" : "false")}\n");
        }

        text.Append(invariant, $"\tblock_size_minimum: {export.BlockSizes.Minimum}\n");
        text.Append(invariant, $"\tblock_size_preferred: {export.BlockSizes.Preferred}\n");
        text.Append(invariant, $"\tblock_size_maximum: {export.BlockSizes.Maximum}\n");
        return text.ToString();
    }

    private static string InfoJson(NbdUri uri, NbdExportDescription description)
    {
        var export = description.Export;
        return WriteJson(writer =>
        {
            writer.WriteStartObject();
            writer.WriteString("protocol", "newstyle-fixed");
            writer.WriteBoolean("TLS", export.Tls);
            writer.WriteBoolean("structured", export.StructuredReplies);
            writer.WriteString("uri", uri.ToString());
            writer.WriteString("export-name", export.Name);
            if (export.Description is { } about)
            {
                writer.WriteString("description", about);
            }

            writer.WriteNumber("export-size", export.Size);
            writer.WriteStartArray("contexts");
            foreach (var context in description.AvailableContexts)
            {
                writer.WriteStringValue(context);
            }

            writer.WriteEndArray();
            foreach (var (name, value) in Flags(export))
            {
                writer.WriteBoolean(name, value);
            }

            writer.WriteNumber("block_size_minimum", export.BlockSizes.Minimum);
            writer.WriteNumber("block_size_preferred", export.BlockSizes.Preferred);
            writer.WriteNumber("block_size_maximum", export.BlockSizes.Maximum);
            writer.WriteStartArray("exports");
            foreach (var name in description.Exports)
            {
                writer.WriteStringValue(name);
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
        });
    }

    private static IEnumerable<(string Name, bool Value)> Flags(NbdExportInfo export)
    {
        yield return ("is_rotational", export.Has(NbdTransmissionFlags.Rotational));
        yield return ("is_read_only", export.IsReadOnly);
        yield return ("can_cache", export.Has(NbdTransmissionFlags.SendCache));
        yield return ("can_df", export.Has(NbdTransmissionFlags.SendDf));
        yield return ("can_fast_zero", export.Has(NbdTransmissionFlags.SendFastZero));
        yield return ("can_flush", export.Has(NbdTransmissionFlags.SendFlush));
        yield return ("can_fua", export.Has(NbdTransmissionFlags.SendFua));
        yield return ("can_multi_conn", export.CanMultiConn);
        yield return ("can_trim", export.Has(NbdTransmissionFlags.SendTrim));
        yield return ("can_zero", export.Has(NbdTransmissionFlags.SendWriteZeroes));
    }

    // ------------------------------------------------------------------------------------- map

    private static Command BuildMap()
    {
        var uri = UriArgument();
        var json = JsonOption();
        var timeout = TimeoutOption();
        var context = new Option<string>("--context")
        {
            Description = "Metadata context to map: base:allocation (default), qemu:dirty-bitmap:NAME, qemu:allocation-depth.",
            DefaultValueFactory = _ => NbdContexts.BaseAllocation,
        };
        var command = new Command("map", "Print the extents of one metadata context over the whole export (like nbdinfo --map).") { uri, context, json, timeout };
        command.SetGuardedAction(async (parse, cancellationToken) =>
        {
            var target = NbdUri.Parse(parse.GetValue(uri)!);
            var name = parse.GetValue(context)!;
            var options = ClientOptions(parse, timeout);
            options.MetaContexts.Add(name);
            await using var client = await NbdClient.ConnectAsync(target, options, cancellationToken);
            if (!client.Export.StructuredReplies)
            {
                throw new NotSupportedException("the server refused structured replies, so it cannot report block status");
            }

            if (!client.HasContext(name))
            {
                throw new NbdException(name.StartsWith(NbdContexts.DirtyBitmapPrefix, StringComparison.Ordinal)
                    ? $"the server does not offer context {name}: there is no changed-block information for this export (a backup must read it in full)"
                    : $"the server does not offer context {name}");
            }

            var map = await client.MapAsync([name], cancellationToken: cancellationToken);
            await client.DisconnectAsync(cancellationToken);
            var output = parse.InvocationConfiguration.Output;
            await output.WriteAsync(parse.GetValue(json) ? MapJson(name, map[name]) : MapText(name, map[name]));
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>The description nbdinfo prints for a status value of a context.</summary>
    public static string Describe(string context, uint flags)
    {
        if (context == NbdContexts.BaseAllocation)
        {
            return (flags & 3) switch
            {
                0 => "data",
                1 => "hole",
                2 => "zero",
                _ => "hole,zero",
            };
        }

        if (context.StartsWith(NbdContexts.DirtyBitmapPrefix, StringComparison.Ordinal))
        {
            return (flags & NbdContexts.DirtyFlag) != 0 ? "dirty" : "clean";
        }

        if (context == NbdContexts.AllocationDepth)
        {
            return flags switch
            {
                0 => "unallocated",
                1 => "local",
                _ => string.Create(CultureInfo.InvariantCulture, $"backing depth {flags}"),
            };
        }

        return string.Empty;
    }

    private static string MapText(string context, IReadOnlyList<NbdExtent> extents)
    {
        var text = new StringBuilder();
        foreach (var extent in extents)
        {
            var description = Describe(context, extent.Flags);
            text.Append(CultureInfo.InvariantCulture, $"{extent.Offset,10}  {extent.Length,10}  {extent.Flags,3}");
            text.Append(description.Length > 0 ? "  " + description + "\n" : "\n");
        }

        return text.ToString();
    }

    private static string MapJson(string context, IReadOnlyList<NbdExtent> extents) => WriteJson(writer =>
    {
        writer.WriteStartArray();
        foreach (var extent in extents)
        {
            writer.WriteStartObject();
            writer.WriteNumber("offset", extent.Offset);
            writer.WriteNumber("length", extent.Length);
            writer.WriteNumber("type", extent.Flags);
            writer.WriteString("description", Describe(context, extent.Flags));
            writer.WriteEndObject();
        }

        writer.WriteEndArray();
    });

    // ------------------------------------------------------------------------------------ copy

    private static Command BuildCopy()
    {
        var uri = UriArgument();
        var destination = new Argument<string>("DEST") { Description = "A file to create or replace (written sparse), or null: to only read." };
        var connections = new Option<int>("--connections") { Description = "Connections to open when the server allows multi-conn.", DefaultValueFactory = _ => 4 };
        var requests = new Option<int>("--requests") { Description = "Read requests in flight, across all connections.", DefaultValueFactory = _ => 64 };
        var requestSize = new Option<int>("--request-size") { Description = "Bytes per read request.", DefaultValueFactory = _ => 256 * 1024 };
        var progress = new Option<bool?>("--progress") { Description = "Show progress (default: when standard error is a terminal)." };
        var json = JsonOption();
        var timeout = TimeoutOption();
        var command = new Command("copy", "Copy a whole export to a file or to null:, skipping holes and zeroes (like nbdcopy).")
        {
            uri, destination, connections, requests, requestSize, progress, json, timeout,
        };
        command.SetGuardedAction(async (parse, cancellationToken) =>
        {
            var target = NbdUri.Parse(parse.GetValue(uri)!);
            var dest = parse.GetValue(destination)!;
            var connectionCount = parse.GetValue(connections);
            var inFlight = parse.GetValue(requests);
            if (connectionCount is < 1 or > 64)
            {
                throw new ArgumentException($"--connections must be between 1 and 64, not {connectionCount}");
            }

            if (inFlight is < 1 or > 4096)
            {
                throw new ArgumentException($"--requests must be between 1 and 4096, not {inFlight}");
            }

            var copyOptions = new NbdCopyOptions { RequestSize = parse.GetValue(requestSize), RequestsInFlight = inFlight };
            copyOptions.Validate();
            var options = ClientOptions(parse, timeout);
            options.Connections = connectionCount;
            options.MaxRequestsInFlight = Math.Max(1, (inFlight + connectionCount - 1) / connectionCount);
            options.MaxBytesInFlight = Math.Max(options.MaxBytesInFlight, (long)options.MaxRequestsInFlight * copyOptions.RequestSize);
            options.MetaContexts.Add(NbdContexts.BaseAllocation);
            options.InlineCompletions = true; // the copier's continuations only issue the next request

            await using var client = await NbdClient.ConnectAsync(target, options, cancellationToken);
            var copier = new NbdCopier(client, copyOptions);
            var error = parse.InvocationConfiguration.Error;
            var show = parse.GetValue(progress) ?? TerminalProgress.IsTerminal(error);
            var started = TimeProvider.System.GetTimestamp();
            NbdCopyResult result;
            await using (var bar = new TerminalProgress(error, "copy", client.Export.Size, () => copier.BytesDone, show))
            {
                if (dest == "null:")
                {
                    result = await copier.CopyAsync(new NullCopyDestination(), cancellationToken);
                }
                else
                {
                    await using var file = new FileCopyDestination(dest);
                    result = await copier.CopyAsync(file, cancellationToken);
                }
            }

            var elapsed = TimeProvider.System.GetElapsedTime(started);
            await client.DisconnectAsync(cancellationToken);
            if (parse.GetValue(json))
            {
                await parse.InvocationConfiguration.Output.WriteAsync(CopyJson(target, dest, result, client.Export.Connections, elapsed));
            }

            return ExitCodes.Success;
        });
        return command;
    }

    private static string CopyJson(NbdUri uri, string destination, NbdCopyResult result, int connections, TimeSpan elapsed) => WriteJson(writer =>
    {
        writer.WriteStartObject();
        writer.WriteString("source", uri.ToString());
        writer.WriteString("destination", destination);
        writer.WriteNumber("export-size", result.ExportSize);
        writer.WriteNumber("bytes-read", result.BytesRead);
        writer.WriteNumber("bytes-written", result.BytesWritten);
        writer.WriteNumber("bytes-skipped", result.BytesSkipped);
        writer.WriteBoolean("sparse", result.UsedAllocationMap);
        writer.WriteNumber("connections", connections);
        writer.WriteNumber("seconds", Math.Round(elapsed.TotalSeconds, 3));
        writer.WriteEndObject();
    });

    private static string WriteJson(Action<Utf8JsonWriter> write)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            write(writer);
        }

        return Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }
}
