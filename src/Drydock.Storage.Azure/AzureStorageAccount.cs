using System.Globalization;

namespace Drydock.Storage.Azure;

/// <summary>
/// Where a storage account's blob service is and how to authenticate to it: a Shared Key, a SAS token, or neither
/// (public containers). Parsed from connection strings as Azure tools write them, or from a SAS URL.
/// </summary>
public sealed class AzureStorageAccount
{
    /// <summary>The account name of the local emulator (Azurite).</summary>
    public const string DevelopmentAccountName = "devstoreaccount1";

    /// <summary>The emulator's published, well-known key (not a secret: every Azurite accepts it).</summary>
    public const string DevelopmentAccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    private AzureStorageAccount(Uri blobEndpoint, string accountName, byte[]? accountKey, string? sas)
    {
        BlobEndpoint = new Uri(blobEndpoint.GetLeftPart(UriPartial.Path).TrimEnd('/'));
        AccountName = accountName;
        AccountKey = accountKey;
        SharedAccessSignature = sas;
    }

    /// <summary>The blob service endpoint without a trailing slash, e.g. <c>https://acct.blob.core.windows.net</c> or
    /// <c>http://127.0.0.1:10000/devstoreaccount1</c> (path-style).</summary>
    public Uri BlobEndpoint { get; }

    /// <summary>The account name.</summary>
    public string AccountName { get; }

    /// <summary>The decoded Shared Key, if any.</summary>
    internal byte[]? AccountKey { get; }

    /// <summary>The SAS query (without a leading <c>?</c>), if any.</summary>
    internal string? SharedAccessSignature { get; }

    /// <summary>Whether requests are signed with Shared Key.</summary>
    public bool UsesSharedKey => AccountKey is not null;

    /// <summary>Parses a connection string: <c>UseDevelopmentStorage=true</c>;
    /// <c>DefaultEndpointsProtocol=https;AccountName=..;AccountKey=..;EndpointSuffix=core.windows.net</c>;
    /// or one with <c>BlobEndpoint=..</c> and <c>AccountKey</c> or <c>SharedAccessSignature</c>.</summary>
    /// <param name="connectionString">The connection string.</param>
    /// <returns>The account.</returns>
    /// <exception cref="FormatException">The string is malformed or incomplete; the message never repeats a key.</exception>
    public static AzureStorageAccount Parse(string connectionString)
    {
        var settings = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var part in connectionString.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                throw new FormatException("Connection string: every setting must be Name=Value.");
            }

            var key = part[..eq].Trim();
            if (!settings.TryAdd(key, part[(eq + 1)..].Trim()))
            {
                throw new FormatException($"Connection string: '{key}' appears twice.");
            }
        }

        if (settings.TryGetValue("UseDevelopmentStorage", out var dev) && string.Equals(dev, "true", StringComparison.OrdinalIgnoreCase))
        {
            var proxy = settings.TryGetValue("DevelopmentStorageProxyUri", out var p) ? new Uri(p) : new Uri("http://127.0.0.1");
            var endpoint = new Uri(string.Create(CultureInfo.InvariantCulture, $"{proxy.Scheme}://{proxy.Host}:10000/{DevelopmentAccountName}"));
            return new AzureStorageAccount(endpoint, DevelopmentAccountName, Convert.FromBase64String(DevelopmentAccountKey), null);
        }

        settings.TryGetValue("AccountName", out var accountName);
        byte[]? accountKey = null;
        if (settings.TryGetValue("AccountKey", out var keyText))
        {
            try
            {
                accountKey = Convert.FromBase64String(keyText);
            }
            catch (FormatException)
            {
                throw new FormatException("Connection string: AccountKey is not valid base64.");
            }
        }

        settings.TryGetValue("SharedAccessSignature", out var sas);
        Uri blobEndpoint;
        if (settings.TryGetValue("BlobEndpoint", out var endpointText))
        {
            if (!Uri.TryCreate(endpointText, UriKind.Absolute, out blobEndpoint!) || (blobEndpoint.Scheme != Uri.UriSchemeHttps && blobEndpoint.Scheme != Uri.UriSchemeHttp))
            {
                throw new FormatException("Connection string: BlobEndpoint is not an http(s) URL.");
            }

            accountName ??= AccountNameFromEndpoint(blobEndpoint);
        }
        else
        {
            if (string.IsNullOrEmpty(accountName))
            {
                throw new FormatException("Connection string: AccountName or BlobEndpoint is required.");
            }

            var protocol = settings.TryGetValue("DefaultEndpointsProtocol", out var proto) ? proto.ToLowerInvariant() : "https";
            var suffix = settings.TryGetValue("EndpointSuffix", out var s) ? s : "core.windows.net";
            blobEndpoint = new Uri($"{protocol}://{accountName}.blob.{suffix}");
        }

        if (accountKey is not null && string.IsNullOrEmpty(accountName))
        {
            throw new FormatException("Connection string: AccountName is required with AccountKey.");
        }

        return new AzureStorageAccount(blobEndpoint, accountName ?? "", accountKey, string.IsNullOrEmpty(sas) ? null : sas.TrimStart('?'));
    }

    /// <summary>Parses a container SAS URL (<c>https://acct.blob.core.windows.net/container/optional/prefix?sv=..&amp;sig=..</c>).</summary>
    /// <param name="sasUrl">The URL.</param>
    /// <returns>The account, the container and the name prefix inside it (may be empty).</returns>
    /// <exception cref="FormatException">The URL has no container or no SAS signature.</exception>
    public static (AzureStorageAccount Account, string Container, string Prefix) ParseSasUrl(Uri sasUrl)
    {
        ArgumentNullException.ThrowIfNull(sasUrl);
        var query = sasUrl.Query.TrimStart('?');
        if (!query.Split('&').Any(p => p.StartsWith("sig=", StringComparison.Ordinal)))
        {
            throw new FormatException("SAS URL: no 'sig=' in the query.");
        }

        var segments = sasUrl.AbsolutePath.Trim('/').Split('/', StringSplitOptions.RemoveEmptyEntries);

        // Path-style endpoints (emulator, IP hosts) carry the account as the first segment.
        var pathStyle = sasUrl.HostNameType is UriHostNameType.IPv4 or UriHostNameType.IPv6 || sasUrl.IsLoopback;
        var skip = pathStyle ? 1 : 0;
        if (segments.Length <= skip)
        {
            throw new FormatException("SAS URL: no container in the path.");
        }

        var endpointPath = pathStyle ? "/" + segments[0] : "";
        var endpoint = new Uri($"{sasUrl.Scheme}://{sasUrl.Authority}{endpointPath}");
        var accountName = pathStyle ? segments[0] : AccountNameFromEndpoint(endpoint);
        var container = segments[skip];
        var prefix = string.Join('/', segments.Skip(skip + 1));
        return (new AzureStorageAccount(endpoint, accountName, null, query), container, prefix);
    }

    private static string AccountNameFromEndpoint(Uri endpoint)
    {
        if (endpoint.HostNameType is UriHostNameType.IPv4 or UriHostNameType.IPv6 || endpoint.IsLoopback)
        {
            return endpoint.AbsolutePath.Trim('/').Split('/')[0];
        }

        return endpoint.Host.Split('.')[0];
    }
}
