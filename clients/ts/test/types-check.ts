// Compile-time only (npm run typecheck): every type the client derives from the generated OpenAPI
// types by path and method must resolve. A renamed path or a changed status would turn one into
// `never`, on which property access still type-checks, so this file fails instead.
import type {
  BalanceView,
  BatchPaymentsRequest,
  BuildResponse,
  ClientTokenRequest,
  ContractList,
  DepositRequest,
  ExecuteAccepted,
  ExecuteRequest,
  ExecuteResponse,
  MintedClientToken,
  NonceView,
  PayRequest,
  SubscribeRequest,
  SubscriptionList,
  TransactionView,
  UnsubscribeQuery,
  ValidatedClientToken,
  WithdrawRequest,
} from "../src/index.js";

type NotNever<T> = [T] extends [never] ? "resolved to never" : true;
export const resolved: [
  NotNever<BalanceView>,
  NotNever<BatchPaymentsRequest>,
  NotNever<BuildResponse>,
  NotNever<ClientTokenRequest>,
  NotNever<ContractList>,
  NotNever<DepositRequest>,
  NotNever<ExecuteAccepted>,
  NotNever<ExecuteRequest>,
  NotNever<ExecuteResponse>,
  NotNever<MintedClientToken>,
  NotNever<NonceView>,
  NotNever<PayRequest>,
  NotNever<SubscribeRequest>,
  NotNever<SubscriptionList>,
  NotNever<TransactionView>,
  NotNever<UnsubscribeQuery>,
  NotNever<ValidatedClientToken>,
  NotNever<WithdrawRequest>,
] = [true, true, true, true, true, true, true, true, true, true, true, true, true, true, true, true, true, true];
