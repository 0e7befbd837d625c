// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @dev Only `transfer` is used; declared here for a type-checked `abi.encodeCall`.
interface IERC20Transfer {
    function transfer(address to, uint256 amount) external returns (bool);
}

/// @title Distributor
/// @notice Holds ERC-20 tokens and pays each off-chain payment out exactly
///         once: a `paymentId` can be distributed a single time, ever.
/// @dev Only `operator` may distribute; only `owner` (the deployer) may
///      rotate the operator key. Checks-effects-interactions throughout.
contract Distributor {
    address public immutable token;
    address public immutable owner;
    address public operator;

    /// @notice paymentId => already paid out.
    mapping(bytes32 => bool) public distributed;

    event Distributed(bytes32 indexed paymentId, address indexed to, uint256 amount);
    event OperatorChanged(address previous, address current);

    error NotOperator();
    error NotOwner();
    error AlreadyDistributed(bytes32 paymentId);
    error ZeroAddress();
    error ZeroAmount();
    error TokenTransferFailed();

    constructor(address token_, address operator_) {
        if (token_ == address(0) || operator_ == address(0)) revert ZeroAddress();
        token = token_;
        owner = msg.sender;
        operator = operator_;
        emit OperatorChanged(address(0), operator_);
    }

    function distribute(bytes32 paymentId, address to, uint256 amount) external {
        // Checks
        if (msg.sender != operator) revert NotOperator();
        if (distributed[paymentId]) revert AlreadyDistributed(paymentId);
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();

        // Effects
        distributed[paymentId] = true;
        emit Distributed(paymentId, to, amount);

        // Interaction: works with tokens that return `true` and with tokens
        // that return nothing; any revert or `false` fails the whole call,
        // which also rolls back the `distributed` flag.
        address t = token;
        if (t.code.length == 0) revert TokenTransferFailed();
        (bool ok, bytes memory ret) = t.call(abi.encodeCall(IERC20Transfer.transfer, (to, amount)));
        if (!ok || (ret.length != 0 && (ret.length < 32 || abi.decode(ret, (uint256)) != 1))) {
            revert TokenTransferFailed();
        }
    }

    function setOperator(address newOperator) external {
        if (msg.sender != owner) revert NotOwner();
        if (newOperator == address(0)) revert ZeroAddress();
        address previous = operator;
        operator = newOperator;
        emit OperatorChanged(previous, newOperator);
    }
}
